package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// unknowns reports what rest, the part of a body that schema does not name, holds: each
// unknown attribute or block with its position, the path of the enclosing block, and the
// name it was probably meant to be. path is "" at the top level of the file.
func unknowns(rest hcl.Body, schema *hcl.BodySchema, path string) problems {
	if rest == nil {
		return nil
	}
	var attrs, blocks []string
	for _, a := range schema.Attributes {
		attrs = append(attrs, a.Name)
	}
	for _, b := range schema.Blocks {
		blocks = append(blocks, b.Type)
	}
	prefix := ""
	if path != "" {
		prefix = path + ": "
	}
	var ps problems
	body, native := rest.(*hclsyntax.Body)
	if !native {
		// HCL's JSON syntax cannot tell an attribute from a block: what the schema
		// expects decides the word.
		kind, names := "attribute", attrs
		if len(attrs) == 0 {
			kind, names = "block", blocks
		}
		found, _ := rest.JustAttributes() // problems with the names are reported elsewhere
		for _, a := range found {
			ps.add(a.NameRange.Ptr(), "%sunknown %s %q%s", prefix, kind, a.Name, hint(a.Name, names, kind))
		}
		return ps
	}
	for _, a := range body.Attributes {
		switch {
		case contains(attrs, a.Name):
			continue
		case contains(blocks, a.Name):
			ps.add(a.NameRange.Ptr(), "%s%q is a block, not an attribute: write %s { … }", prefix, a.Name, a.Name)
		default:
			ps.add(a.NameRange.Ptr(), "%sunknown attribute %q%s", prefix, a.Name, hint(a.Name, attrs, "attribute"))
		}
	}
	for _, b := range body.Blocks {
		switch {
		case contains(blocks, b.Type):
			continue
		case contains(attrs, b.Type):
			ps.add(b.TypeRange.Ptr(), "%s%q is an attribute, not a block: write %s = …", prefix, b.Type, b.Type)
		default:
			ps.add(b.TypeRange.Ptr(), "%sunknown block %q%s", prefix, b.Type, hint(b.Type, blocks, "block"))
		}
	}
	return ps
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// hint says which of names an unknown name was probably meant to be, or else lists them.
func hint(name string, names []string, kind string) string {
	if len(names) == 0 {
		return fmt.Sprintf(" (no %ss are expected here)", kind)
	}
	best, bestDist := "", 3 // farther than 2 edits is a different word
	for _, n := range names {
		if d := editDistance(name, n, bestDist); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = strconv.Quote(n)
	}
	return fmt.Sprintf(" (expected one of %s)", strings.Join(quoted, ", "))
}

// editDistance is the Levenshtein distance between a and b, or limit when it is at least
// limit: names in a file may be long, and only near misses matter.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		rowMin := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			rowMin = min(rowMin, cur[j])
		}
		if rowMin >= limit {
			return limit
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], limit)
}
