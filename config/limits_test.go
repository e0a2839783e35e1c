package config

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse_TooLarge(t *testing.T) {
	// A valid file padded with a comment up to the limit is read; one byte more is not.
	atLimit := minimal + "#" + strings.Repeat("x", maxFileSize-len(minimal)-2) + "\n"
	if _, err := Parse("agent.hcl", []byte(atLimit)); err != nil {
		t.Fatalf("file of exactly %d bytes: %v", len(atLimit), err)
	}
	_, err := Parse("agent.hcl", []byte(atLimit+"\n"))
	want := "agent.hcl: file too large: 32 KiB, limit 32 KiB (a configuration is a few KiB; is this the right file?)"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}

	start := time.Now()
	_, err = Parse("agent.hcl", make([]byte, 10<<20))
	if err == nil || !strings.HasPrefix(err.Error(), "agent.hcl: file too large: 10 MiB, limit 32 KiB") {
		t.Errorf("err = %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusing 10 MiB took %s", d)
	}
}

func TestLoad_TooLarge(t *testing.T) {
	t.Run("File", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "agent.hcl")
		writeFile(t, path, strings.Repeat("# padding\n", 10<<10))
		_, err := Load(path)
		if want := path + ": file too large: 100 KiB, limit 32 KiB"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %v, want %q…", err, want)
		}
	})
	t.Run("Device", func(t *testing.T) {
		// A file that never ends is read up to the limit, not forever.
		if _, err := os.Stat("/dev/zero"); err != nil {
			t.Skip(err)
		}
		_, err := Load("/dev/zero")
		if want := "/dev/zero: file too large: more than 32 KiB, limit 32 KiB"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %v, want %q…", err, want)
		}
	})
	t.Run("KeyFile", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "agent.hcl")
		writeFile(t, path, strings.Replace(minimal, "insecure_plaintext = true", `encrypt_key_file = "/dev/zero"`, 1))
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "gossip.encrypt_key_file: key file /dev/zero is larger than 1 KiB") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestParse_PlainValues checks that values are written out, not computed.
func TestParse_PlainValues(t *testing.T) {
	group := func(attr string) string {
		return strings.Replace(minimal, "priority   = 100", attr, 1) // the attribute is on line 6
	}
	bad := []struct {
		name string
		src  string
		want string
	}{
		{"Arithmetic", group("priority = 50 + 50"), `agent.hcl:6,14-21: group "egress".priority: must be a plain value (a string, number, bool, list or map), not an expression`},
		{"Interpolation", group("priority = 1\n  target = \"${\"eni\"}\""), `agent.hcl:7,12-22: group "egress".target: must be a plain value`},
		{"Conditional", group("priority = true ? 1 : 2"), `group "egress".priority: must be a plain value`},
		{"ForInList", group("priority = 1\n  route_tables = [for x in [\"a\"]: x]"), `group "egress".route_tables: must be a plain value`},
		{"ComputedKey", group("priority = 1\n  route_table_tags = { (\"a\") = \"b\" }"), `group "egress".route_table_tags: must be a plain value`},
		{"Negative", group("priority = -5"), `agent.hcl:6,14-16: group "egress".priority: must be between 1 and 1000 (got -5)`},
		{"HugeNumber", group("priority = 1e9999999"), `agent.hcl:6,14-23: group "egress".priority: a number here is too large or too small`},
		{"HugeNumberAsString", group("priority = 1\n  target = 1e9999999"), `group "egress".target: a number here is too large or too small`},
		{"TinyNumber", group("priority = 1e-9999999"), `group "egress".priority: a number here is too large or too small`},
		{"HugeNumberInList", group("priority = 1\n  destinations = [1e9999999]"), `group "egress".destinations: a number here is too large or too small`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			lines := parseErr(t, tc.src)
			if !hasLine(lines, tc.want) {
				t.Errorf("error lines:\n%s\nwant one containing:\n%s", strings.Join(lines, "\n"), tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}

	c := mustParse(t, group("priority = 100\n  route_table_tags = { \"natganker:group\" = \"egress\", env = <<EOT\nprod\nEOT\n  }"))
	if got := c.Groups[0].RouteTableTags; got["natganker:group"] != "egress" || got["env"] != "prod\n" {
		t.Errorf("tags = %q", got)
	}
}

// input is a file to parse, valid or not.
type input struct {
	filename, src string
	valid         bool
}

// pathological returns inputs that once took seconds, gigabytes of error text or the whole
// stack, by name. Each is at most maxFileSize unless its name says otherwise.
func pathological() map[string]input {
	rnd := rand.New(rand.NewSource(1))
	random := func(alphabet string) string {
		b := make([]byte, maxFileSize)
		for i := range b {
			if alphabet == "" {
				b[i] = byte(rnd.Intn(256))
			} else {
				b[i] = alphabet[rnd.Intn(len(alphabet))]
			}
		}
		return string(b)
	}
	// fill repeats unit after head, and appends tail, to at most maxFileSize bytes.
	fill := func(head, unit, tail string) string {
		n := (maxFileSize - len(head) - len(tail)) / len(unit)
		return head + strings.Repeat(unit, n) + tail
	}
	var groups, sharedTables strings.Builder
	for i := 0; groups.Len() < maxFileSize-200; i++ {
		fmt.Fprintf(&groups, "group \"g%d\" {\n  priority = 1\n  elastic_ip = \"eipalloc-%x\"\n  route_tables = [\"rtb-01\"]\n}\n", i, i)
	}
	sharedTables.WriteString("gossip {\n  insecure_plaintext = true\n}\n")
	for g := range 2 {
		fmt.Fprintf(&sharedTables, "group \"g%d\" {\n  priority = 1\n  elastic_ip = \"eipalloc-%x\"\n  route_tables = [", g, g)
		for i := range 500 {
			fmt.Fprintf(&sharedTables, "\"rtb-%05x\",", i)
		}
		sharedTables.WriteString("]\n  destinations = [")
		for i := range 400 {
			fmt.Fprintf(&sharedTables, "\"10.%d.%d.0/24\",", i/256, i%256)
		}
		sharedTables.WriteString("]\n}\n")
	}
	forExpr := "[for a in [" + strings.Repeat("1,", 100) + "]: "
	var tables []string // as many as fit: each takes 13 bytes in the list
	for i := range (maxFileSize - len(minimal) - 100) / 13 {
		tables = append(tables, fmt.Sprintf("rtb-%05x", i))
	}
	return map[string]input{
		"TooLarge10MiB":       {"agent.hcl", strings.Repeat("x = 1\n", 10<<20/6), false},
		"RandomBytes":         {"agent.hcl", random(""), false},
		"RandomHCLish":        {"agent.hcl", random("abc{}[]()=\"$%#/*\n ,.:0123456789<>-!?"), false},
		"RandomJSON":          {"agent.json", random("{}[]\":,0123456789 \ntrue"), false},
		"UnknownAttributes":   {"agent.hcl", fill("gossip {\n", "priorty = 100\n", "}\n"), false},
		"RepeatedAttribute":   {"agent.hcl", fill("group \"a\" {\n", "priority = 1\n", "}\n"), false},
		"UnknownBlocks":       {"agent.hcl", fill("", "metrics {}\n", ""), false},
		"NestedBlocks":        {"agent.hcl", fill("", "a {\n", ""), false},
		"NestedBlocksClosed":  {"agent.hcl", fill("", "a {\n", strings.Repeat("}\n", 10)), false},
		"NestedLists":         {"agent.hcl", fill("a = ", "[", ""), false},
		"NestedParentheses":   {"agent.hcl", fill("a = ", "(", ""), false},
		"NestedTemplates":     {"agent.hcl", fill("a = ", "\"${", ""), false},
		"NestedJSON":          {"agent.json", fill("", "[", ""), false},
		"UnaryOperators":      {"agent.hcl", fill("group \"a\" {\n  priority = ", "-", "1\n}\n"), false},
		"Conditionals":        {"agent.hcl", fill("group \"a\" {\n  priority = ", "true ? 1 : ", "1\n}\n"), false},
		"Sums":                {"agent.hcl", fill("group \"a\" {\n  priority = ", "1e300 * ", "1\n}\n"), false},
		"NestedFor":           {"agent.hcl", "group \"a\" {\n  priority = " + strings.Repeat(forExpr, 5) + "1" + strings.Repeat("]", 5) + "\n}\n", false},
		"HugeExponent":        {"agent.hcl", "group \"a\" {\n  priority = 1e9999999\n  target = 1e9999999\n}\n", false},
		"HugeExponentJSON":    {"agent.json", `{"group": {"a": {"priority": 1e9999999, "target": 1e9999999}}}`, false},
		"LongNumber":          {"agent.hcl", fill("group \"a\" {\n  priority = 1", "0", "\n}\n"), false},
		"LongString":          {"agent.hcl", fill("group \"a\" {\n  target = \"", "x", "\"\n}\n"), false},
		"ManyGroups":          {"agent.hcl", groups.String(), false},
		"SharedRouteTables":   {"agent.hcl", sharedTables.String(), false},
		"ManyBadListElements": {"agent.hcl", fill("group \"a\" {\n  route_tables = [", "\"x\",", "]\n}\n"), false},
		"ValidLongList":       {"agent.hcl", withTables(minimal, tables...), true},
	}
}

// TestParse_Pathological checks that no input takes long to report or gives a long
// error. The bound is generous for slow, loaded or -race runs; BenchmarkParse_Pathological
// measures the real time.
func TestParse_Pathological(t *testing.T) {
	for name, in := range pathological() {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, err := Parse(in.filename, []byte(in.src))
			d := time.Since(start)
			if in.valid {
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s", d)
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) > maxProblems+1 || len(err.Error()) > (maxProblems+1)*(maxProblemLen+100) {
				t.Errorf("error of %d lines, %d bytes", len(lines), len(err.Error()))
			}
			if d > 2*time.Second {
				t.Errorf("Parse took %s", d)
			}
			t.Logf("%s, %d lines, first: %.150s", d, len(lines), lines[0])
		})
	}
}

// BenchmarkParse_Pathological measures how long the inputs of TestParse_Pathological take
// to report, and how long a normal file takes to read, for comparison:
//
//	go test -run '^$' -bench Pathological ./config/
func BenchmarkParse_Pathological(b *testing.B) {
	example, err := os.ReadFile("../examples/agent.hcl")
	if err != nil {
		b.Fatal(err)
	}
	inputs := pathological()
	inputs["Example"] = input{"agent.hcl", string(example), true}
	for name, in := range inputs {
		b.Run(name, func(b *testing.B) {
			src := []byte(in.src)
			var errBytes int
			for b.Loop() {
				_, err := Parse(in.filename, src)
				if err != nil {
					errBytes = len(err.Error())
				}
			}
			b.ReportMetric(float64(len(src)), "input-bytes")
			b.ReportMetric(float64(errBytes), "error-bytes")
		})
	}
}

// FuzzParse checks that no input makes Parse panic or give an unbounded error.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../examples/agent.hcl")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(minimal), false)
	f.Add(example, false)
	f.Add([]byte(`{"gossip": {"insecure_plaintext": true}, "group": {"egress": {"priority": 1, "elastic_ip": "eipalloc-1"}}}`), true)
	f.Add([]byte("group \"a\" {\n  priority = \"${[(-1e9)]}\" ? <<EOT\n%{ for x in y }${x}%{ endfor }\nEOT\n : 2\n}\n"), false)
	f.Fuzz(func(t *testing.T, src []byte, isJSON bool) {
		name := "agent.hcl"
		if isJSON {
			name = "agent.json"
		}
		_, err := Parse(name, src)
		if err == nil {
			return
		}
		if lines := strings.Count(err.Error(), "\n") + 1; lines > maxProblems+1 || len(err.Error()) > (maxProblems+1)*(maxProblemLen+100) {
			t.Errorf("error of %d lines, %d bytes", lines, len(err.Error()))
		}
	})
}

// TestParse_NotText refuses a binary file or one with a stray non-UTF-8 byte with one line
// that says so and where, before HCL's parser sees it.
func TestParse_NotText(t *testing.T) {
	for _, tt := range []struct {
		name, src, want string
	}{
		{"Gzip", "\x1f\x8b\x08\x00\x00\x00\x00\x00", "agent.hcl:1: not a text file: byte 2 is 0x8b"},
		{"NULOnLine3", "node {\n}\ngroup \"a\" {\x00}\n", "agent.hcl:3: not a text file: byte 21 is 0x00"},
		{"Latin1", "# caf\xe9\nnode {}\n", "agent.hcl:1: not a text file: byte 6 is 0xe9"},
		{"ELF", "\x7fELF\x02\x01\x01\x00", "agent.hcl:1: not a text file: byte 8 is 0x00"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("agent.hcl", []byte(tt.src))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q, want one line starting %q", err, tt.want)
			}
		})
	}
	// UTF-8 text is read as before.
	if _, err := Parse("agent.hcl", []byte("# café ✓\n")); err != nil && strings.Contains(err.Error(), "not a text file") {
		t.Fatalf("UTF-8 comment refused: %v", err)
	}
}
