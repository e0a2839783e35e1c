package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// maxProblems is how many problems an error lists before it sums up the rest in one line.
// A file of garbage has thousands; the first few are the ones to fix.
const maxProblems = 20

// maxProblemLen bounds one line of an error, which may quote a value from the file.
const maxProblemLen = 400

// problem is one thing wrong with a configuration.
type problem struct {
	subject *hcl.Range // where, when known
	msg     string     // what, without the position
}

// problems collects what is wrong while a configuration is read and checked.
type problems []problem

func (ps *problems) add(subject *hcl.Range, format string, args ...any) {
	*ps = append(*ps, problem{subject: subject, msg: fmt.Sprintf(format, args...)})
}

// addDiags adds the error diagnostics, each summary prefixed with path (the setting or
// block it concerns) when path is not empty.
func (ps *problems) addDiags(diags hcl.Diagnostics, path string) {
	for _, diag := range diags {
		if diag.Severity != hcl.DiagError {
			continue
		}
		msg := diag.Summary
		if diag.Detail != "" {
			msg += "; " + diag.Detail
		}
		msg = strings.Join(strings.Fields(msg), " ")
		if path != "" {
			msg = path + ": " + msg
		}
		*ps = append(*ps, problem{subject: diag.Subject, msg: msg})
	}
}

// err returns nil when there is no problem, else an error with one line per problem (joined
// with errors.Join). Lines come in file order, those without a position last in the order
// they were found, so that the same file always gives the same error; after maxProblems
// lines one more says how many were left out.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	sorted := append(problems(nil), ps...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].subject, sorted[j].subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	n := min(len(sorted), maxProblems)
	errs := make([]error, 0, n+1)
	for _, p := range sorted[:n] {
		errs = append(errs, errors.New(p.String()))
	}
	switch more := len(sorted) - n; {
	case more == 1:
		errs = append(errs, errors.New("and 1 more problem"))
	case more > 1:
		errs = append(errs, fmt.Errorf("and %d more problems", more))
	}
	return errors.Join(errs...)
}

// String renders the problem as one line: the position, when known, then the message,
// cut short if a long value from the file makes it longer than maxProblemLen.
func (p problem) String() string {
	msg := p.msg
	if len(msg) > maxProblemLen {
		cut := maxProblemLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = fmt.Sprintf("%s… (%d more bytes)", msg[:cut], len(msg)-cut)
	}
	if p.subject != nil {
		return p.subject.String() + ": " + msg
	}
	return msg
}
