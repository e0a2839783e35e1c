package lab

import (
	"encoding/json"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ChaosResult is what a chaos run found, as the report, the JSON and the plot show it.
type ChaosResult struct {
	Started    time.Time         `json:"started"`
	Seed       uint64            `json:"seed"`
	Seconds    float64           `json:"run_s"`
	Machine    map[string]string `json:"machine"`
	Settings   map[string]string `json:"settings"`
	Bounds     Bounds            `json:"-"`
	BoundsText map[string]string `json:"bounds"`
	Kinds      []KindRow         `json:"per_kind"`
	Faults     []FaultRow        `json:"faults"`
	Moves      []MoveRow         `json:"moves"`
	Violations []Violation       `json:"violations"`
	Problems   []string          `json:"problems,omitempty"`
	Agents     []AgentRow        `json:"agents"`
	// Inapplicable counts I2 episodes with no peer able to take over.
	Inapplicable int            `json:"i2_inapplicable"`
	Samples      int            `json:"samples"`
	EC2Calls     map[string]int `json:"ec2_calls,omitempty"`
	// Gaps are the client's gaps of 100 ms or more: start (s from the start) and length.
	Gaps [][2]float64 `json:"client_gaps"`

	timeline *Timeline
	owners   []ownerSpan
	gaps     []Gap
	end      time.Time
}

// KindRow sums up the faults of one kind.
type KindRow struct {
	Kind      FaultKind `json:"kind"`
	Count     int       `json:"count"`
	MaxOutage float64   `json:"max_client_outage_s"`
	// Bound is the largest I5 bound among them without EC2 faults; Stretched counts those
	// whose bound an overlapping EC2 fault stretched, to at most MaxBound.
	Bound      float64 `json:"outage_bound_s,omitempty"`
	Stretched  int     `json:"bounds_stretched_by_ec2,omitempty"`
	MaxBound   float64 `json:"largest_stretched_bound_s,omitempty"`
	Moves      int     `json:"ownership_moves"`
	Violations int     `json:"violations"`
}

// FaultRow is one fault with what the referee found for it.
type FaultRow struct {
	*Fault
	StartS     float64 `json:"start_s"`
	EndS       float64 `json:"end_s"`
	MaxOutage  float64 `json:"max_client_outage_s"`
	Bound      float64 `json:"outage_bound_s,omitempty"`
	Base       float64 `json:"outage_bound_without_ec2_s,omitempty"`
	Moves      int     `json:"ownership_moves"`
	Violations int     `json:"violations"`
}

// MoveRow is one change of owner in moto.
type MoveRow struct {
	AtS float64 `json:"at_s"`
	Move
}

// AgentRow is one agent process's resources, first reading and last.
type AgentRow struct {
	AgentResources
	StartedS float64 `json:"started_s"`
	LivedS   float64 `json:"watched_s"`
}

type ownerSpan struct {
	from, to time.Time
	owner    string
}

// Passed reports whether the run found no violation and no problem.
func (r *ChaosResult) Passed() bool { return len(r.Violations) == 0 && len(r.Problems) == 0 }

func (r *ChaosResult) rel(t time.Time) float64 { return t.Sub(r.Started).Seconds() }

// fill turns the judgement into the result.
func (r *ChaosResult) fill(c *chaosRun, rec Record, j *Judgement) {
	r.Started, r.end = rec.Start, rec.End
	r.Seconds = rec.End.Sub(rec.Start).Seconds()
	r.Samples, r.Inapplicable, r.gaps = len(rec.Samples), j.Inapplicable, rec.Gaps
	b := rec.Bounds
	r.BoundsText = map[string]string{
		"I1 split (one takeover)":           b.Split.String(),
		"I2/I5 takeover (dead, agent gone)": b.Takeover.String(),
		"I2/I5 datapath broken":             b.Datapath.String(),
		"unhealthy after repair":            b.Hysteresis.String(),
		"EC2 fault: extra after it ends":    b.EC2Recovery.String(),
		"start-up grace":                    b.StartupGrace.String(),
		"failback delay":                    b.FailbackDelay.String(),
		"client gaps ignored below":         b.QuietGap.String(),
		"timing tolerance":                  b.Tolerance.String(),
	}
	c.mu.Lock()
	r.Problems = append([]string(nil), c.problems...)
	c.mu.Unlock()
	kinds := map[FaultKind]*KindRow{}
	for _, f := range rec.Faults {
		fr := j.Faults[f.ID]
		row := FaultRow{Fault: f, StartS: r.rel(f.Start), EndS: r.rel(f.End), MaxOutage: fr.MaxOutage.Seconds(),
			Bound: fr.Bound.Seconds(), Base: fr.Base.Seconds(), Moves: fr.Moves, Violations: fr.Violations}
		r.Faults = append(r.Faults, row)
		k := kinds[f.Kind]
		if k == nil {
			k = &KindRow{Kind: f.Kind}
			kinds[f.Kind] = k
		}
		k.Count++
		k.MaxOutage = math.Max(k.MaxOutage, row.MaxOutage)
		k.Bound = math.Max(k.Bound, row.Base)
		if row.Bound > row.Base {
			k.Stretched++
			k.MaxBound = math.Max(k.MaxBound, row.Bound)
		}
		k.Moves += row.Moves
		k.Violations += row.Violations
	}
	for _, k := range FaultKinds {
		if row := kinds[k]; row != nil {
			r.Kinds = append(r.Kinds, *row)
		}
	}
	for _, m := range j.Moves {
		r.Moves = append(r.Moves, MoveRow{AtS: r.rel(m.At), Move: m})
		fault := ""
		if m.Fault != 0 {
			fault = fmt.Sprintf(" (counted against #%d)", m.Fault)
		}
		verdict := "justified"
		if !m.OK {
			verdict = "NOT justified"
		}
		c.tl.Add(m.At, "referee", "owner %s → %s, %s: %s%s", m.From, m.To, verdict, m.Why, fault)
	}
	for _, v := range j.Violations {
		c.tl.Add(v.At, "referee", "VIOLATION %s: %s", v.Invariant, v.Detail)
	}
	for _, g := range rec.Gaps {
		if g.Duration() >= 100*time.Millisecond {
			r.Gaps = append(r.Gaps, [2]float64{math.Round(r.rel(g.From)*1000) / 1000, math.Round(g.Duration().Seconds()*1000) / 1000})
			c.tl.Add(g.To, "client", "reply after %.3fs without any (since %+.3fs)", g.Duration().Seconds(), r.rel(g.From))
		}
	}
	for _, v := range j.Violations {
		v.AtS = r.rel(v.At)
		var b strings.Builder
		c.tl.Print(&b, v.From.Add(-3*time.Second), v.To.Add(2*time.Second))
		v.Excerpt = capLines(b.String(), 160)
		r.Violations = append(r.Violations, v)
	}
	for _, a := range c.res.list() {
		r.Agents = append(r.Agents, AgentRow{AgentResources: a, StartedS: r.rel(a.Started), LivedS: a.Lived.Seconds()})
	}
	var cur *ownerSpan
	for _, s := range rec.Samples {
		o := s.Owner()
		if s.Stale {
			continue
		}
		if cur == nil || cur.owner != o {
			if cur != nil {
				cur.to = s.At
				r.owners = append(r.owners, *cur)
			}
			cur = &ownerSpan{from: s.At, owner: o}
		}
	}
	if cur != nil {
		cur.to = rec.End
		r.owners = append(r.owners, *cur)
	}
}

// capLines keeps the first and last lines of a long excerpt.
func capLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) <= n {
		return strings.Join(lines, "\n")
	}
	head, tail := lines[:n/4], lines[len(lines)-(n-n/4):]
	return strings.Join(head, "\n") + fmt.Sprintf("\n          … %d lines left out …\n", len(lines)-n) + strings.Join(tail, "\n")
}

func seconds(x float64) string {
	if x == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f s", x)
}

// Table renders the per-kind summary as Markdown.
func (r *ChaosResult) Table() string {
	var b strings.Builder
	b.WriteString("| fault kind | count | max client outage | outage bound | bounds stretched by EC2 faults (largest) | ownership moves | violations |\n|---|---|---|---|---|---|---|\n")
	var n, moves, viol int
	var worst float64
	for _, k := range r.Kinds {
		stretched := ""
		if k.Stretched > 0 {
			stretched = fmt.Sprintf("%d (%s)", k.Stretched, seconds(k.MaxBound))
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %d | %d |\n", k.Kind, k.Count, seconds(k.MaxOutage), seconds(k.Bound), stretched, k.Moves, k.Violations)
		n += k.Count
		worst = math.Max(worst, k.MaxOutage)
	}
	moves = len(r.Moves)
	viol = len(r.Violations)
	unattributed := 0
	for _, v := range r.Violations {
		if len(v.Faults) == 0 {
			unattributed++
		}
	}
	if unattributed > 0 {
		fmt.Fprintf(&b, "| (no fault in effect) | | | | | | %d |\n", unattributed)
	}
	fmt.Fprintf(&b, "| **all** | %d | %s | | | %d | %d |\n", n, seconds(worst), moves, viol)
	return b.String()
}

// Summary is a few lines for the console: the table, the violations in brief, the problems
// and the agents' resources.
func (r *ChaosResult) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos run: seed %d, %.0f s, %d faults, %d ownership moves, %d samples (I2 not applicable %d times: no able peer)\n\n",
		r.Seed, r.Seconds, len(r.Faults), len(r.Moves), r.Samples, r.Inapplicable)
	b.WriteString(r.Table())
	if len(r.Violations) == 0 {
		b.WriteString("\nno violations\n")
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "\nVIOLATION %s at %+.1fs (faults %s): %s\n", v.Invariant, v.AtS, faultIDs(v.Faults), v.Detail)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "\nPROBLEM %s\n", p)
	}
	b.WriteString("\n")
	b.WriteString(r.agentsTable())
	return b.String()
}

func (r *ChaosResult) agentsTable() string {
	var b strings.Builder
	b.WriteString("Agent processes (from /proc: the agent exports no goroutine count; threads stand in):\n\n")
	b.WriteString("| host | pid | started | watched | RSS first → last (max) | threads first → last (max) | fds first → last (max) | at end |\n|---|---|---|---|---|---|---|---|\n")
	for _, a := range r.Agents {
		end := "stopped"
		if a.Alive {
			end = "running"
		}
		fmt.Fprintf(&b, "| %s | %d | %+.0f s | %.0f s | %.1f → %.1f MiB (%.1f) | %d → %d (%d) | %d → %d (%d) | %s |\n",
			a.Host, a.PID, a.StartedS, a.LivedS, float64(a.First.RSSKiB)/1024, float64(a.Last.RSSKiB)/1024, float64(a.Max.RSSKiB)/1024,
			a.First.Threads, a.Last.Threads, a.Max.Threads, a.First.FDs, a.Last.FDs, a.Max.FDs, end)
	}
	return b.String()
}

// Write stores the result as chaos-<time>.{md,json,svg} and the whole timeline as
// chaos-<time>-timeline.txt under dir.
func (r *ChaosResult) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create results dir: %w", err)
	}
	base := filepath.Join(dir, "chaos-"+r.Started.UTC().Format("20060102T150405Z"))
	var md strings.Builder
	fmt.Fprintf(&md, "# natganker chaos run, %s\n\n", r.Started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&md, "Seed %d (`natganker-lab chaos -seed %d` draws the same faults), %.0f s of faults and settling, %d faults, %d ownership moves, %d referee samples.\n\n",
		r.Seed, r.Seed, r.Seconds, len(r.Faults), len(r.Moves), r.Samples)
	md.WriteString(r.Table())
	fmt.Fprintf(&md, "\n![timeline](%s)\n", filepath.Base(base)+".svg")
	md.WriteString("\n## Violations\n\n")
	if len(r.Violations) == 0 {
		md.WriteString("None.\n")
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&md, "### %s at %+.1fs (faults %s)\n\n%s\n\n```\n%s\n```\n\n", v.Invariant, v.AtS, faultIDs(v.Faults), v.Detail, v.Excerpt)
	}
	if len(r.Problems) > 0 {
		md.WriteString("\n## Problems\n\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&md, "- %s\n", p)
		}
	}
	md.WriteString("\n## Faults\n\n| # | kind | host | at | until | detail | max client outage | bound | moves | violations |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, f := range r.Faults {
		host := f.Host
		if f.Role != "" {
			host += " (" + f.Role + ")"
		}
		detail := f.Detail
		if f.Err != "" {
			detail += " — error: " + f.Err
		}
		fmt.Fprintf(&md, "| %d | %s | %s | %+.1fs | %+.1fs | %s | %s | %s | %d | %d |\n", f.ID, f.Kind, host, f.StartS, f.EndS,
			detail, seconds(f.MaxOutage), seconds(f.Bound), f.Moves, f.Violations)
	}
	md.WriteString("\n## Ownership moves\n\n| at | from | to | justified | why | counted against |\n|---|---|---|---|---|---|\n")
	for _, m := range r.Moves {
		against := ""
		if m.Fault != 0 {
			against = fmt.Sprintf("#%d", m.Fault)
		}
		fmt.Fprintf(&md, "| %+.1fs | %s | %s | %v | %s | %s |\n", m.AtS, m.From, m.To, m.OK, m.Why, against)
	}
	md.WriteString("\n## Agents\n\n")
	md.WriteString(r.agentsTable())
	md.WriteString("\n## Bounds\n\n")
	for _, k := range sortedKeys(r.BoundsText) {
		fmt.Fprintf(&md, "- %s: %s\n", k, r.BoundsText[k])
	}
	md.WriteString("\nThe invariants and what each allows are described in lab/README.md, section Chaos.\n\n## Machine\n\n")
	for _, k := range sortedKeys(r.Machine) {
		fmt.Fprintf(&md, "- %s: %s\n", k, r.Machine[k])
	}
	md.WriteString("\n## Settings\n\n")
	for _, k := range sortedKeys(r.Settings) {
		fmt.Fprintf(&md, "- %s: %s\n", k, r.Settings[k])
	}
	if len(r.EC2Calls) > 0 {
		fmt.Fprintf(&md, "- EC2 calls through the proxy: %v\n", r.EC2Calls)
	}
	fmt.Fprintf(&md, "\nFull timeline: %s\n", filepath.Base(base)+"-timeline.txt")
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".json", js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(base+".svg", []byte(r.SVG()), 0o644); err != nil {
		return err
	}
	if r.timeline != nil {
		f, err := os.Create(base + "-timeline.txt")
		if err != nil {
			return err
		}
		defer f.Close()
		r.timeline.Print(f, time.Time{}, time.Time{})
	}
	return nil
}

// kindColor groups the fault kinds by colour in the plot.
func kindColor(k FaultKind) string {
	switch {
	case k == FaultHardKill || k == FaultAgentKill || k == FaultSigterm:
		return "#d62728"
	case k.datapath():
		return "#9467bd"
	case k == FaultWrongKey || k == FaultClash:
		return "#8c564b"
	case k.partition() || k == FaultLoss:
		return "#ff7f0e"
	case k.ec2():
		return "#17becf"
	}
	return "#7f7f7f"
}

// SVG draws the run: one lane per fault kind (a bar per fault), moto's owner over time, the
// client's gaps (height = length, against the largest bound), and the violations.
func (r *ChaosResult) SVG() string {
	var kinds []FaultKind
	seen := map[FaultKind]bool{}
	for _, f := range r.Faults {
		seen[f.Kind] = true
	}
	for _, k := range FaultKinds {
		if seen[k] {
			kinds = append(kinds, k)
		}
	}
	const w, left, right, top, lane = 1100, 150, 20, 50, 18
	gapH := 120.0
	h := top + lane*(len(kinds)+2) + int(gapH) + 70
	span := math.Max(r.Seconds, 1)
	px := func(s float64) float64 { return left + s/span*(w-left-right) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">natganker chaos run, seed %d: %d faults, %d ownership moves, %d violations</text>`+"\n",
		left, r.Seed, len(r.Faults), len(r.Moves), len(r.Violations))
	// time grid
	step := math.Max(10, math.Ceil(span/12/10)*10)
	for t := 0.0; t <= span; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/><text x="%.1f" y="%d" text-anchor="middle">%.0f s</text>`+"\n",
			px(t), px(t), top-5, h-45, px(t), h-32, t)
	}
	y := top
	for _, k := range kinds {
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, y+12, k)
		for _, f := range r.Faults {
			if f.Kind != k {
				continue
			}
			x0, x1 := px(f.StartS), px(math.Max(f.EndS, f.StartS+0.3))
			fill := kindColor(k)
			if f.Violations > 0 {
				fill = "#000"
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.8"><title>#%d %s %s: %s</title></rect>`+"\n",
				x0, y+2, math.Max(x1-x0, 1.5), lane-4, fill, f.ID, f.Kind, f.Host, html.EscapeString(f.Detail))
		}
		y += lane
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">owner in moto</text>`+"\n", left-6, y+12)
	colors := map[string]string{Nat1: "#1f77b4", Nat2: "#2ca02c", "": "#d62728"}
	for _, o := range r.owners {
		x0, x1 := px(r.rel(o.from)), px(r.rel(o.to))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect>`+"\n",
			x0, y+2, math.Max(x1-x0, 1), lane-4, colors[o.owner], orNone(o.owner))
	}
	y += lane + 10
	quiet, takeover := r.Bounds.QuietGap.Seconds(), r.Bounds.Takeover.Seconds()
	maxGap := takeover + 1
	for _, g := range r.gaps {
		maxGap = math.Max(maxGap, g.Duration().Seconds())
	}
	maxGap = math.Ceil(maxGap)
	base := float64(y) + gapH
	fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">client gaps</text>`+"\n", left-6, base-gapH/2)
	for _, l := range []struct {
		v     float64
		label string
	}{{quiet, "%.0f s: shorter gaps are not outages"}, {takeover, "%.0f s: takeover bound"}, {maxGap, "%.0f s"}} {
		yy := base - l.v/maxGap*gapH
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ccc" stroke-dasharray="3 3"/><text x="%d" y="%.1f" fill="#888">`+l.label+`</text>`+"\n",
			left, w-right, yy, yy, left+2, yy-2, l.v)
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#444"/>`+"\n", left, w-right, base, base)
	for _, g := range r.gaps {
		d := g.Duration().Seconds()
		if d < 0.1 {
			continue
		}
		x := px(r.rel(g.From))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#444"><title>%.2f s at %+.1fs</title></rect>`+"\n",
			x, base-d/maxGap*gapH, math.Max(px(r.rel(g.To))-x, 1.5), d/maxGap*gapH, d, r.rel(g.From))
	}
	for _, v := range r.Violations {
		x := px(v.AtS)
		fmt.Fprintf(&b, `<path d="M %.1f %d l -5 -9 l 10 0 z" fill="#d00"><title>%s: %s</title></path>`+"\n", x, top-2, v.Invariant, html.EscapeString(v.Detail))
	}
	legend := []struct{ c, t string }{{"#1f77b4", "nat1 owns"}, {"#2ca02c", "nat2 owns"}, {"#d62728", "split / none"}, {"#000", "fault with a violation"}, {"#d00", "▼ violation"}}
	for i, l := range legend {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", left+i*150, h-18, l.c, left+i*150+14, h-9, l.t)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
