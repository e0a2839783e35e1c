// Package telemetry serves the agent's Prometheus metrics. An Exporter counts the agent's
// events (agent.EventSink), EC2 calls (ec2.CallObserver) and memberlist's own metrics into a
// registry of its own, and serves them over HTTP at /metrics between Start and Close.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/ec2"
)

var (
	_ agent.EventSink  = (*Exporter)(nil)
	_ ec2.CallObserver = (*Exporter)(nil)
)

// Phases of a takeover, as the takeover log line times them (the label of
// natganker_takeover_phase_seconds).
var phases = []string{"detect", "confirm", "eip", "routes", "verify"}

// durationBuckets suit everything from a 5 ms EC2 call to a 40 s EC2 outage.
var durationBuckets = prometheus.ExponentialBuckets(0.005, 2, 14)

// Options configure an Exporter.
type Options struct {
	// Listen is the host:port /metrics is served on.
	Listen string
	// Groups are the agent's groups: their ownership gauges start at 0.
	Groups []string
	// Version is reported by natganker_build_info.
	Version string
	// Logger receives the server's errors.
	Logger hclog.Logger
}

// Exporter is the agent's metrics and the HTTP server that serves them.
type Exporter struct {
	opts Options
	log  hclog.Logger
	reg  *prometheus.Registry

	owned            *prometheus.GaugeVec
	ownership        *prometheus.CounterVec
	members          *prometheus.GaugeVec
	membersUnhealthy prometheus.Gauge
	healthy          prometheus.Gauge
	datapathHealthy  prometheus.Gauge
	takeovers        *prometheus.CounterVec
	takeoverFailures *prometheus.CounterVec
	repairs          *prometheus.CounterVec
	phase            *prometheus.HistogramVec
	takeoverTotal    *prometheus.HistogramVec
	bursts           *prometheus.CounterVec
	burstSeconds     prometheus.Histogram
	ec2Calls         *prometheus.CounterVec
	ec2Seconds       *prometheus.HistogramVec
	ec2Retries       *prometheus.CounterVec
	hookRuns         *prometheus.CounterVec
	memberlist       *memberlistMetrics

	// mu guards peers: each peer's state as last reported, from which the member gauges are
	// computed.
	mu    sync.Mutex
	peers map[string]peerState

	srv       *http.Server
	ln        net.Listener
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type peerState struct {
	state   string
	healthy bool
}

// New builds the metrics. It starts nothing: events and calls are counted from now on, and
// Start serves them.
func New(o Options) *Exporter {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	e := &Exporter{opts: o, log: o.Logger.Named("telemetry"), reg: prometheus.NewRegistry(), peers: map[string]peerState{}}
	f := factory{e.reg}
	e.owned = f.gaugeVec("natganker_group_owned",
		"1 when EC2 last showed this node holding the group's Elastic IP, else 0.", "group")
	e.ownership = f.counterVec("natganker_ownership_changes_total",
		"Times this node acquired or released a group, by why (cause).", "group", "change", "cause")
	e.members = f.gaugeVec("natganker_members",
		"Cluster members as this node sees them, itself included, by state (alive, dead, left).", "state")
	e.membersUnhealthy = f.gauge("natganker_members_unhealthy",
		"Alive members, this node included, that report themselves unable to own groups.")
	e.healthy = f.gauge("natganker_healthy",
		"1 when this node may own groups (datapath healthy, instance not stopped in EC2), else 0.")
	e.datapathHealthy = f.gauge("natganker_datapath_healthy",
		"1 when the latest datapath checks passed (forwarding, masquerade, interface, egress probe), else 0.")
	e.takeovers = f.counterVec("natganker_takeovers_total",
		"Takeovers by this node that completed (EC2 read back), by group and reason.", "group", "reason")
	e.takeoverFailures = f.counterVec("natganker_takeover_failures_total",
		"Claims by this node that failed (and are retried), by group and reason.", "group", "reason")
	e.repairs = f.counterVec("natganker_drift_repairs_total",
		"Drifted routes or Elastic IP put back on this node, the owner, by group.", "group")
	e.phase = f.histogramVec("natganker_takeover_phase_seconds",
		"Takeover timings as the takeover log line gives them: detect (trigger to decision), confirm (the direct-probe burst), and eip, routes and verify (each counted from the decision).",
		"group", "phase")
	e.takeoverTotal = f.histogramVec("natganker_takeover_duration_seconds",
		"Takeovers from the trigger (e.g. the owner's last sign of life) to EC2 read back showing everything on this node.", "group")
	e.bursts = f.counterVec("natganker_confirmation_bursts_total",
		"Direct-probe bursts sent to confirm a peer's death, by outcome: answered (it is up), other_key (port open, probes unanswered), unreachable (confirmed gone), error.",
		"outcome")
	e.burstSeconds = f.histogram("natganker_confirmation_burst_duration_seconds",
		"How long confirmation bursts took.")
	e.ec2Calls = f.counterVec("natganker_ec2_requests_total",
		"EC2 API calls, after retries, by action and result (ok, EC2's error code, timeout, canceled, network).", "action", "result")
	e.ec2Seconds = f.histogramVec("natganker_ec2_request_duration_seconds",
		"EC2 API calls from the first attempt to the last answer, retries and backoff included, by action.", "action")
	e.ec2Retries = f.counterVec("natganker_ec2_retries_total",
		"EC2 API attempts beyond the first of each call (throttling, 5xx, network errors), by action.", "action")
	e.hookRuns = f.counterVec("natganker_hook_runs_total",
		"Event hooks run, by hook (on_acquire, on_release, on_member) and result (ok, failed, timeout, dropped).", "hook", "result")
	build := f.gaugeVec("natganker_build_info", "The agent's version and Go version; always 1.", "version", "goversion")
	build.WithLabelValues(o.Version, runtime.Version()).Set(1)
	e.memberlist = newMemberlistMetrics(f)
	e.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	for _, g := range o.Groups {
		e.owned.WithLabelValues(g).Set(0)
	}
	for _, s := range []string{"alive", "dead", "left"} {
		e.members.WithLabelValues(s).Set(0)
	}
	for _, r := range []string{agent.BurstAnswered, agent.BurstOtherKey, agent.BurstUnreachable, agent.BurstError} {
		e.bursts.WithLabelValues(r)
	}
	return e
}

// factory registers each metric as it is built.
type factory struct{ reg *prometheus.Registry }

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets})
	f.reg.MustRegister(h)
	return h
}

func (f factory) histogramVec(name, help string, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets}, labels)
	f.reg.MustRegister(h)
	return h
}

// Event counts one of the agent's events. It is called on the agent's run goroutine and
// only updates counters.
func (e *Exporter) Event(ev agent.Event) {
	switch ev.Kind {
	case agent.EventAcquire:
		e.owned.WithLabelValues(ev.Group).Set(1)
		e.ownership.WithLabelValues(ev.Group, "acquire", ev.Cause).Inc()
	case agent.EventRelease:
		e.owned.WithLabelValues(ev.Group).Set(0)
		e.ownership.WithLabelValues(ev.Group, "release", ev.Cause).Inc()
	case agent.EventClaim:
		e.claim(ev)
	case agent.EventBurst:
		e.bursts.WithLabelValues(ev.Outcome).Inc()
		if ev.Outcome != agent.BurstError {
			e.burstSeconds.Observe(ev.Took.Seconds())
		}
	case agent.EventHealth:
		e.healthy.Set(b2f(ev.Healthy))
		e.datapathHealthy.Set(b2f(ev.DatapathHealthy))
		e.mu.Lock()
		e.peers[""] = peerState{state: "alive", healthy: ev.Healthy}
		e.updateMembers()
		e.mu.Unlock()
	case agent.EventMember:
		e.mu.Lock()
		if ev.State == "" {
			delete(e.peers, ev.Member)
		} else {
			e.peers[ev.Member] = peerState{state: ev.State, healthy: ev.Healthy}
		}
		e.updateMembers()
		e.mu.Unlock()
	}
}

func (e *Exporter) claim(ev agent.Event) {
	tv := ev.Takeover
	switch {
	case tv == nil:
	case tv.Error != "":
		e.takeoverFailures.WithLabelValues(ev.Group, ev.Cause).Inc()
	case ev.Repair:
		e.repairs.WithLabelValues(ev.Group).Inc()
	default:
		e.takeovers.WithLabelValues(ev.Group, ev.Cause).Inc()
		for i, d := range []time.Duration{tv.Detected, tv.Confirmed, tv.EIPMoved, tv.RoutesMoved, tv.Verified} {
			e.phase.WithLabelValues(ev.Group, phases[i]).Observe(d.Seconds())
		}
		e.takeoverTotal.WithLabelValues(ev.Group).Observe((tv.Detected + tv.Verified).Seconds())
	}
}

// updateMembers sets the member gauges from e.peers ("" is this node). e.mu is held.
func (e *Exporter) updateMembers() {
	counts := map[string]int{"alive": 0, "dead": 0, "left": 0}
	unhealthy := 0
	for _, p := range e.peers {
		counts[p.state]++
		if p.state == "alive" && !p.healthy {
			unhealthy++
		}
	}
	for s, n := range counts {
		e.members.WithLabelValues(s).Set(float64(n))
	}
	e.membersUnhealthy.Set(float64(unhealthy))
}

// EC2Call counts one EC2 API call.
func (e *Exporter) EC2Call(c ec2.Call) {
	e.ec2Calls.WithLabelValues(c.Action, c.Result()).Inc()
	e.ec2Seconds.WithLabelValues(c.Action).Observe(c.Took.Seconds())
	if c.Attempts > 1 {
		e.ec2Retries.WithLabelValues(c.Action).Add(float64(c.Attempts - 1))
	}
}

// HookRun counts one run of an event hook (see agent.HookObserver).
func (e *Exporter) HookRun(hook, result string) {
	e.hookRuns.WithLabelValues(hook, result).Inc()
}

// Handler serves the metrics in the Prometheus text format.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{ErrorLog: e.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})})
}

// Start binds the listen address and serves /metrics until Close; a taken or invalid address
// is an error. From Start on, memberlist's metrics are counted too.
func (e *Exporter) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", e.opts.Listen)
	if err != nil {
		return fmt.Errorf("serve prometheus metrics on %s (telemetry.prometheus_listen): %w", e.opts.Listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", e.Handler())
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: e.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})}
	e.ln = ln
	bridge.add(e.memberlist)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("prometheus endpoint stopped", "error", err)
		}
	}()
	e.log.Info("serving prometheus metrics", "address", ln.Addr().String(), "path", "/metrics")
	return nil
}

// Addr is the address /metrics is served on, once started.
func (e *Exporter) Addr() string {
	if e.ln == nil {
		return ""
	}
	return e.ln.Addr().String()
}

// Close stops serving, waiting up to 2 s for scrapes in progress. Safe to call more than
// once, and without Start.
func (e *Exporter) Close() error {
	var err error
	e.closeOnce.Do(func() {
		if e.srv == nil {
			return
		}
		bridge.remove(e.memberlist)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = e.srv.Shutdown(ctx); err != nil {
			err = errors.Join(fmt.Errorf("stop prometheus endpoint: %w", err), e.srv.Close())
		}
		e.wg.Wait()
	})
	return err
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
