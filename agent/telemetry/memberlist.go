package telemetry

import (
	"strings"
	"sync"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// memberlist reports its metrics through hashicorp/go-metrics' process-wide global sink
// (memberlist v0.7.0 calls metrics.IncrCounterWithLabels and friends). go-metrics has a
// Prometheus sink, but it names metrics as go-metrics keys them (memberlist_probeNode in
// milliseconds, counters without _total) and drops a metric a minute after it last changed;
// this bridge maps the keys memberlist uses to names that follow Prometheus conventions and
// keeps them. The global sink is installed once per process, on the first Start, and hands
// each sample to every started Exporter: an agent runs one memberlist per process, so the
// numbers are that memberlist's (in tests running several agents in one process they are
// the sum of all).

type memberlistMetrics struct {
	healthScore    prometheus.Gauge
	probe          prometheus.Histogram
	gossip         prometheus.Histogram
	pushPull       prometheus.Histogram
	messages       *prometheus.CounterVec
	degraded       *prometheus.CounterVec
	sentBytes      *prometheus.CounterVec
	receivedBytes  *prometheus.CounterVec
	tcpConnections *prometheus.CounterVec
	nodes          *prometheus.GaugeVec
	broadcastQueue prometheus.Gauge
}

// probeBuckets suit memberlist's probes and gossip rounds: a millisecond to a few seconds.
var probeBuckets = prometheus.ExponentialBuckets(0.001, 2, 13)

func newMemberlistMetrics(f factory) *memberlistMetrics {
	hist := func(name, help string) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: probeBuckets})
		f.reg.MustRegister(h)
		return h
	}
	m := &memberlistMetrics{
		healthScore: f.gauge("natganker_memberlist_health_score",
			"memberlist's awareness score: 0 is healthy; higher means this node is slow to answer probes and stretches its own timeouts."),
		probe: hist("natganker_memberlist_probe_duration_seconds",
			"memberlist's failure-detector probe rounds (probeNode)."),
		gossip: hist("natganker_memberlist_gossip_duration_seconds",
			"memberlist's gossip rounds."),
		pushPull: hist("natganker_memberlist_push_pull_duration_seconds",
			"memberlist's full state syncs with a peer (pushPullNode)."),
		messages: f.counterVec("natganker_memberlist_messages_total",
			"memberlist alive, suspect and dead messages processed, by type.", "type"),
		degraded: f.counterVec("natganker_memberlist_degraded_total",
			"memberlist probes (probe) and suspicion timeouts (timeout) run while this node's health score was degraded.", "kind"),
		sentBytes: f.counterVec("natganker_memberlist_sent_bytes_total",
			"Bytes memberlist sent, by protocol.", "protocol"),
		receivedBytes: f.counterVec("natganker_memberlist_received_bytes_total",
			"Bytes memberlist received over UDP.", "protocol"),
		tcpConnections: f.counterVec("natganker_memberlist_tcp_connections_total",
			"TCP connections memberlist accepted (in) and opened (out).", "direction"),
		nodes: f.gaugeVec("natganker_memberlist_nodes",
			"Nodes in memberlist's own table at its latest state sync, by state.", "state"),
		broadcastQueue: f.gauge("natganker_memberlist_broadcast_queue",
			"Messages waiting in memberlist's broadcast queue at its latest check."),
	}
	for _, t := range []string{"alive", "suspect", "dead"} {
		m.messages.WithLabelValues(t)
	}
	return m
}

// counter maps a go-metrics counter key.
func (m *memberlistMetrics) counter(key string, val float32) {
	v := float64(val)
	switch key {
	case "memberlist.msg.alive", "memberlist.msg.suspect", "memberlist.msg.dead":
		m.messages.WithLabelValues(strings.TrimPrefix(key, "memberlist.msg.")).Add(v)
	case "memberlist.degraded.probe", "memberlist.degraded.timeout":
		m.degraded.WithLabelValues(strings.TrimPrefix(key, "memberlist.degraded.")).Add(v)
	case "memberlist.udp.sent":
		m.sentBytes.WithLabelValues("udp").Add(v)
	case "memberlist.tcp.sent":
		m.sentBytes.WithLabelValues("tcp").Add(v)
	case "memberlist.udp.received":
		m.receivedBytes.WithLabelValues("udp").Add(v)
	case "memberlist.tcp.accept":
		m.tcpConnections.WithLabelValues("in").Add(v)
	case "memberlist.tcp.connect":
		m.tcpConnections.WithLabelValues("out").Add(v)
	}
}

// gauge maps a go-metrics gauge key.
func (m *memberlistMetrics) gauge(key string, val float32, labels []metrics.Label) {
	switch key {
	case "memberlist.health.score":
		m.healthScore.Set(float64(val))
	case "memberlist.node.instances":
		for _, l := range labels {
			if l.Name == "node_state" {
				m.nodes.WithLabelValues(l.Value).Set(float64(val))
			}
		}
	}
}

// sample maps a go-metrics sample key; timers arrive in milliseconds (the go-metrics
// TimerGranularity the bridge installs).
func (m *memberlistMetrics) sample(key string, val float32) {
	seconds := float64(val) / float64(time.Second/time.Millisecond)
	switch key {
	case "memberlist.probeNode":
		m.probe.Observe(seconds)
	case "memberlist.gossip":
		m.gossip.Observe(seconds)
	case "memberlist.pushPullNode":
		m.pushPull.Observe(seconds)
	case "memberlist.queue.broadcasts":
		m.broadcastQueue.Set(float64(val))
	}
}

// fanout is the go-metrics sink installed once per process: it hands every sample to the
// started exporters.
type fanout struct {
	once sync.Once
	mu   sync.RWMutex
	to   map[*memberlistMetrics]bool
}

var bridge = &fanout{to: map[*memberlistMetrics]bool{}}

var _ metrics.MetricSink = (*fanout)(nil)

func (f *fanout) add(m *memberlistMetrics) {
	f.once.Do(func() {
		cfg := metrics.DefaultConfig("")
		// No hostname in the keys and no runtime sampler goroutine: the keys stay memberlist's.
		cfg.HostName, cfg.EnableHostname, cfg.EnableRuntimeMetrics = "", false, false
		cfg.TimerGranularity = time.Millisecond
		// NewGlobal fails only for a sink it cannot use; this one always works.
		_, _ = metrics.NewGlobal(cfg, f)
	})
	f.mu.Lock()
	f.to[m] = true
	f.mu.Unlock()
}

func (f *fanout) remove(m *memberlistMetrics) {
	f.mu.Lock()
	delete(f.to, m)
	f.mu.Unlock()
}

func (f *fanout) each(fn func(m *memberlistMetrics)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for m := range f.to {
		fn(m)
	}
}

func flat(key []string) string { return strings.Join(key, ".") }

// SetGauge implements metrics.MetricSink.
func (f *fanout) SetGauge(key []string, val float32) { f.SetGaugeWithLabels(key, val, nil) }

// SetGaugeWithLabels implements metrics.MetricSink.
func (f *fanout) SetGaugeWithLabels(key []string, val float32, labels []metrics.Label) {
	k := flat(key)
	f.each(func(m *memberlistMetrics) { m.gauge(k, val, labels) })
}

// EmitKey implements metrics.MetricSink; memberlist emits no keys.
func (f *fanout) EmitKey(key []string, val float32) {}

// IncrCounter implements metrics.MetricSink.
func (f *fanout) IncrCounter(key []string, val float32) { f.IncrCounterWithLabels(key, val, nil) }

// IncrCounterWithLabels implements metrics.MetricSink.
func (f *fanout) IncrCounterWithLabels(key []string, val float32, labels []metrics.Label) {
	k := flat(key)
	f.each(func(m *memberlistMetrics) { m.counter(k, val) })
}

// AddSample implements metrics.MetricSink.
func (f *fanout) AddSample(key []string, val float32) { f.AddSampleWithLabels(key, val, nil) }

// AddSampleWithLabels implements metrics.MetricSink.
func (f *fanout) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	k := flat(key)
	f.each(func(m *memberlistMetrics) { m.sample(k, val) })
}
