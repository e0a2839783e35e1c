package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ReportParts are the benchmarks one report is made of, in the order it shows them: each
// wrote <Prefix>-<stamp>.md (and its plot) into the results directory.
var ReportParts = []struct{ Prefix, Title, Made string }{
	{"bench", "Failover in the lab", "natganker-lab bench"},
	{"sweep", "Takeover of N route tables at EC2's rate limit", "BenchmarkTableSweep (./ec2)"},
	{"footprint", "Idle footprint", "BenchmarkFootprint (./agent)"},
}

// Markers around the part of the README that a report replaces.
const (
	ReadmeBegin = "<!-- measured:begin: written by `make bench` (natganker-lab report); edits here are lost -->"
	ReadmeEnd   = "<!-- measured:end -->"
)

// ReportOptions say which results make a report and where it goes.
type ReportOptions struct {
	// Dir holds the results; the report is written there as report-<Stamp>.md.
	Dir   string
	Stamp string
	// Stamps names, by part prefix, a part taken from another run than Stamp.
	Stamps map[string]string
	// Command is how the results were made, as the report should say.
	Command string
	// Readme, when set, is the README whose measured section is replaced by the report.
	Readme string
}

// WriteReport puts the parts' Markdown together in report-<Stamp>.md under Dir and, with
// Readme set, replaces what stands between ReadmeBegin and ReadmeEnd there with the same
// text, its links made relative to the README. It returns the report's path.
func WriteReport(o ReportOptions) (string, error) {
	if o.Stamp == "" {
		return "", errors.New("report: no stamp")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Made by `%s`; the parts below are the files it wrote under lab/results/.\n", o.Command)
	for _, p := range ReportParts {
		stamp := o.Stamp
		if s, ok := o.Stamps[p.Prefix]; ok {
			stamp = s
		}
		name := p.Prefix + "-" + stamp + ".md"
		text, err := os.ReadFile(filepath.Join(o.Dir, name))
		if err != nil {
			return "", fmt.Errorf("report: part %q (%s): %w", p.Prefix, p.Made, err)
		}
		fmt.Fprintf(&b, "\n## %s\n\n", p.Title)
		if stamp != o.Stamp {
			fmt.Fprintf(&b, "From an earlier run, %s.\n\n", stamp)
		}
		fmt.Fprintf(&b, "[%s](%s), by %s.\n\n", name, name, p.Made)
		b.WriteString(demote(dropTitle(string(text))))
	}
	body := b.String()
	path := filepath.Join(o.Dir, "report-"+o.Stamp+".md")
	if err := os.WriteFile(path, []byte("# natganker benchmarks, "+o.Stamp+"\n\n"+body), 0o644); err != nil {
		return "", err
	}
	if o.Readme == "" {
		return path, nil
	}
	rel, err := filepath.Rel(filepath.Dir(o.Readme), o.Dir)
	if err != nil {
		return "", err
	}
	if err := replaceMeasured(o.Readme, demote(relink(body, filepath.ToSlash(rel)))); err != nil {
		return "", err
	}
	return path, nil
}

// dropTitle removes a part's first-level title: the report gives its own.
func dropTitle(md string) string {
	if strings.HasPrefix(md, "# ") {
		if i := strings.IndexByte(md, '\n'); i >= 0 {
			return strings.TrimLeft(md[i+1:], "\n")
		}
		return ""
	}
	return md
}

// demote makes every Markdown heading one level deeper.
func demote(md string) string {
	lines := strings.Split(md, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "#") {
			lines[i] = "#" + l
		}
	}
	return strings.Join(lines, "\n")
}

// relativeLink is a Markdown link or image to a file beside the report: no scheme, no path.
var relativeLink = regexp.MustCompile(`\]\(([A-Za-z0-9._-]+)\)`)

// relink points links to files beside the report at dir, as seen from the README.
func relink(md, dir string) string {
	return relativeLink.ReplaceAllString(md, "]("+dir+"/$1)")
}

// replaceMeasured replaces the text between the markers in the README at path.
func replaceMeasured(path, text string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, ReadmeBegin), strings.Index(s, ReadmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("report: %s has no measured section to replace: the lines %q and %q must stand around it, in that order", path, ReadmeBegin, ReadmeEnd)
	}
	s = s[:i+len(ReadmeBegin)] + "\n\n" + strings.TrimSpace(text) + "\n\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
