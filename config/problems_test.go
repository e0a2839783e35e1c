package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// position matches the file:line,col at the start of an error line.
var position = regexp.MustCompile(`^agent\.hcl:(\d+),(\d+)`)

// TestParse_ProblemOrder checks that problems come in file order, the same on every run.
func TestParse_ProblemOrder(t *testing.T) {
	t.Run("Decoding", func(t *testing.T) {
		// Unknown attributes, which HCL keeps in a map.
		var b strings.Builder
		b.WriteString("gossip {\n  insecure_plaintext = true\n")
		for i := range 12 {
			fmt.Fprintf(&b, "  unknown_%d = %d\n", i, i)
		}
		b.WriteString("}\n" + minimal[strings.Index(minimal, "group"):])
		checkOrder(t, b.String(), 12)
	})
	t.Run("Validation", func(t *testing.T) {
		// Bad tag keys, held in a map, and bad values in several blocks.
		src := `gossip {
  insecure_plaintext = true
  confirm_probes = 0
}
group "egress" {
  priority   = 0
  elastic_ip = "10.0.0.1"
  route_table_tags = {` + strings.Repeat(`
  "" = "x"`, 1) + `
  }
  failback = "never"
}
log {
  level  = "loud"
  format = "xml"
}
datapath {
  manage = true
}
`
		for i := range 10 {
			// Tag keys longer than 128 characters, each a different problem.
			src = strings.Replace(src, `"" = "x"`, fmt.Sprintf(`"" = "x"
    "%s%d" = "x"`, strings.Repeat("k", 130), i), 1)
		}
		checkOrder(t, src, 17)
	})
}

// checkOrder parses src, which has at least want problems, 20 times: the error must be the
// same each time and its lines in file order, those without a position last.
func checkOrder(t *testing.T, src string, want int) {
	t.Helper()
	first := parseErr(t, src)
	if len(first) < want {
		t.Fatalf("%d error lines, want at least %d:\n%s", len(first), want, strings.Join(first, "\n"))
	}
	for range 19 {
		if again := parseErr(t, src); strings.Join(again, "\n") != strings.Join(first, "\n") {
			t.Fatalf("the error changed between runs:\n%s\nthen:\n%s", strings.Join(first, "\n"), strings.Join(again, "\n"))
		}
	}
	prevLine, prevCol, unpositioned := 0, 0, false
	for _, l := range first {
		m := position.FindStringSubmatch(l)
		if m == nil {
			unpositioned = true
			continue
		}
		line, _ := strconv.Atoi(m[1])
		col, _ := strconv.Atoi(m[2])
		if unpositioned || line < prevLine || line == prevLine && col < prevCol {
			t.Fatalf("line %q is out of file order in:\n%s", l, strings.Join(first, "\n"))
		}
		prevLine, prevCol = line, col
	}
}

// TestParse_ProblemCap checks that an error lists at most 20 problems and counts the rest.
func TestParse_ProblemCap(t *testing.T) {
	t.Run("Parse", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("gossip {\n  insecure_plaintext = true\n")
		for i := range 25 {
			fmt.Fprintf(&b, "  unknown_%d = %d\n", i, i)
		}
		b.WriteString("}\n" + minimal[strings.Index(minimal, "group"):])
		lines := parseErr(t, b.String())
		if len(lines) != 21 || lines[20] != "and 5 more problems" {
			t.Fatalf("%d lines, last %q; want 20 problems and \"and 5 more problems\"", len(lines), lines[len(lines)-1])
		}
		if want := `agent.hcl:3,3-12: gossip: unknown attribute "unknown_0"`; !strings.HasPrefix(lines[0], want) {
			t.Errorf("first line %q, want the first problem of the file, %q", lines[0], want)
		}
	})
	t.Run("Validate", func(t *testing.T) {
		c := Default()
		c.Gossip.InsecurePlaintext = true
		g := DefaultGroup("egress")
		g.Priority, g.ElasticIP = 1, "eipalloc-01"
		c.Groups = []Group{g}
		for i := range 21 {
			c.Gossip.Peers = append(c.Gossip.Peers, fmt.Sprintf("bad peer %d", i))
		}
		lines := strings.Split(c.Validate().Error(), "\n")
		if len(lines) != 21 || lines[0] != `gossip.peers[0]: must be host or host:port with a port of 1..65535 (got "bad peer 0")` ||
			lines[20] != "and 1 more problem" {
			t.Errorf("error lines:\n%s", strings.Join(lines, "\n"))
		}
	})
	t.Run("LongValue", func(t *testing.T) {
		long := strings.Repeat("x", 10000)
		lines := parseErr(t, strings.Replace(minimal, `"eipalloc-0123456789abcdef0"`, `"`+long+`"`, 1))
		if len(lines) != 1 || len(lines[0]) > 500 || !strings.HasSuffix(lines[0], "more bytes)") {
			t.Errorf("error line of %d bytes: %.200q…", len(lines[0]), lines[0])
		}
	})
}
