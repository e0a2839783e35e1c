package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// Scrape is one scrape of a /metrics endpoint in the text format: each series, as the
// endpoint writes it (`name{label="value",…}`, labels sorted by name), to its value.
type Scrape map[string]float64

// Get fetches url and parses it.
func Get(ctx context.Context, url string) (Scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Scrape, error) {
	out := Scrape{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("parse metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("parse metrics: %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Sum adds the values of every series of the metric name whose labels include all of
// labels (given as `key="value"`).
func (s Scrape) Sum(name string, labels ...string) float64 {
	total := 0.0
	for series, v := range s {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(","+strings.TrimSuffix(rest, "}")+",", ","+l+",") {
				ok = false
				break
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// Show lists, sorted, the series whose names start with one of prefixes (all without any).
func (s Scrape) Show(prefixes ...string) string {
	var lines []string
	for series, v := range s {
		match := len(prefixes) == 0
		for _, p := range prefixes {
			match = match || strings.HasPrefix(series, p)
		}
		if match {
			lines = append(lines, fmt.Sprintf("%s %g", series, v))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
