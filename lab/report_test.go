package lab

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeParts(t *testing.T, dir, stamp string) {
	t.Helper()
	parts := map[string]string{
		"bench":     "# natganker failover benchmark, 2026\n\n| a | b |\n|---|---|\n| kill | 0.39 s |\n\n## Machine\n\n- cpus: 2\n\n![client outage per run](bench-" + stamp + ".svg)\n",
		"sweep":     "# Takeover of N route tables\n\n| N | ratio |\n|---|---|\n| 200 | 1.02 |\n\n![sweep](sweep-" + stamp + ".svg)\n",
		"footprint": "# natganker idle footprint\n\n| members | RSS |\n|---|---|\n| 2 | 21 MB |\n",
	}
	for p, text := range parts {
		if err := os.WriteFile(filepath.Join(dir, p+"-"+stamp+".md"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The report holds every part under its own title, and the README's measured section is
// replaced by it, links pointing into the results directory, the rest of the README kept.
func TestWriteReport(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "lab", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const stamp = "20261202T010000Z"
	writeParts(t, dir, stamp)
	readme := filepath.Join(root, "README.md")
	before := "# natganker\n\nintro\n\n## Measured\n\n" + ReadmeBegin + "\n\nold figures\n\n" + ReadmeEnd + "\n\n## Layout\n\nrest\n"
	if err := os.WriteFile(readme, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	path, err := WriteReport(ReportOptions{Dir: dir, Stamp: stamp, Command: "make bench", Readme: readme})
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# natganker benchmarks, " + stamp, "## Failover in the lab", "### Machine",
		"## Takeover of N route tables", "## Idle footprint", "| 200 | 1.02 |", "](bench-" + stamp + ".svg)", "`make bench`"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	got, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(got)
	for _, want := range []string{"intro\n\n## Measured\n\n" + ReadmeBegin, "### Failover in the lab", "#### Machine",
		"](lab/results/bench-" + stamp + ".svg)", "](lab/results/footprint-" + stamp + ".md)", "| 2 | 21 MB |", ReadmeEnd + "\n\n## Layout\n\nrest\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("README lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "old figures") || strings.Contains(s, "\n# natganker benchmarks") {
		t.Errorf("README keeps the old section or the report's title:\n%s", s)
	}
	// Run again: the section is replaced, not added to.
	if _, err := WriteReport(ReportOptions{Dir: dir, Stamp: stamp, Command: "make bench", Readme: readme}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(readme)
	if string(again) != s {
		t.Errorf("a second report of the same results changed the README")
	}
}

// A part from another run is named as such; a missing part or a README without the markers
// is an error naming what is missing, and leaves the README as it was.
func TestWriteReport_Errors(t *testing.T) {
	dir := t.TempDir()
	writeParts(t, dir, "A")
	writeParts(t, dir, "B")
	if err := os.Remove(filepath.Join(dir, "sweep-B.md")); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteReport(ReportOptions{Dir: dir, Stamp: "B", Command: "make bench"}); err == nil || !strings.Contains(err.Error(), `part "sweep"`) {
		t.Fatalf("missing part: err = %v", err)
	}
	path, err := WriteReport(ReportOptions{Dir: dir, Stamp: "B", Stamps: map[string]string{"sweep": "A"}, Command: "make bench"})
	if err != nil {
		t.Fatal(err)
	}
	if report, _ := os.ReadFile(path); !strings.Contains(string(report), "From an earlier run, A.") {
		t.Fatalf("the part from run A is not named:\n%s", report)
	}
	readme := filepath.Join(dir, "README.md")
	const text = "# x\n\n## Measured\n\nhand-written\n"
	if err := os.WriteFile(readme, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteReport(ReportOptions{Dir: dir, Stamp: "A", Command: "make bench", Readme: readme}); err == nil || !strings.Contains(err.Error(), "measured:begin") {
		t.Fatalf("README without markers: err = %v", err)
	}
	if got, _ := os.ReadFile(readme); string(got) != text {
		t.Fatalf("README changed:\n%s", got)
	}
}
