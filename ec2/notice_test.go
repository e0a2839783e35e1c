package ec2

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/ec2/ec2test"
)

func TestParseSpotAction(t *testing.T) {
	tests := []struct {
		name, in string
		want     *SpotAction
		wantErr  string
	}{
		{"Terminate", `{"action": "terminate", "time": "2017-09-18T08:22:00Z"}`,
			&SpotAction{Action: "terminate", Time: time.Date(2017, 9, 18, 8, 22, 0, 0, time.UTC)}, ""},
		{"Stop", `{"action":"stop","time":"2026-12-01T18:16:54Z"}`,
			&SpotAction{Action: "stop", Time: time.Date(2026, 12, 1, 18, 16, 54, 0, time.UTC)}, ""},
		{"Hibernate", "{\n\t\"action\": \"hibernate\",\n\t\"time\": \"2026-12-01T18:16:54Z\"\n}",
			&SpotAction{Action: "hibernate", Time: time.Date(2026, 12, 1, 18, 16, 54, 0, time.UTC)}, ""},
		{"UnknownAction", `{"action": "reboot", "time": "2017-09-18T08:22:00Z"}`, nil, "unknown spot instance action"},
		{"BadTime", `{"action": "terminate", "time": "soon"}`, nil, "time"},
		{"HTMLPage", `<html><body>404 - Not Found</body></html>`, nil, "not a spot instance action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSpotAction(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Action != tt.want.Action || !got.Time.Equal(tt.want.Time) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRebalance(t *testing.T) {
	got, err := ParseRebalance(`{"noticeTime": "2020-10-27T08:22:00Z"}`)
	if err != nil || !got.Equal(time.Date(2020, 10, 27, 8, 22, 0, 0, time.UTC)) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ParseRebalance(`{"noticeTime": ""}`); err == nil {
		t.Errorf("a notice without a time was taken")
	}
	if _, err := ParseRebalance(`[]`); err == nil {
		t.Errorf("a list was taken for a notice")
	}
}

func TestParseMaintenance(t *testing.T) {
	in := `[
	{"Code": "system-reboot", "Description": "scheduled reboot", "State": "active", "EventId": "instance-event-1",
	 "NotBefore": "1 Dec 2026 18:14:53 GMT", "NotAfter": "8 Dec 2026 18:14:53 GMT", "NotBeforeDeadline": "10 Dec 2026 18:14:53 GMT"},
	{"Code": "instance-stop", "State": "completed", "EventId": "instance-event-2", "NotBefore": "21 Jan 2019 09:00:43 GMT"},
	{"Code": "instance-retirement", "State": "canceled", "EventId": "instance-event-3", "NotBefore": "21 Jan 2019 09:00:43 GMT"},
	{"Code": "instance-stop", "State": "active", "EventId": "instance-event-4", "NotBefore": "21 Jan 2019 09:00:43 GMT"}
]`
	got, err := ParseMaintenance(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].EventID != "instance-event-1" || got[1].EventID != "instance-event-4" {
		t.Fatalf("events = %+v, want the two not completed or canceled", got)
	}
	if want := time.Date(2026, 12, 1, 18, 14, 53, 0, time.UTC); !got[0].NotBefore.Equal(want) || got[0].Code != "system-reboot" {
		t.Errorf("first event = %+v, want system-reboot not before %v", got[0], want)
	}
	if want := time.Date(2026, 12, 8, 18, 14, 53, 0, time.UTC); !got[0].NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", got[0].NotAfter, want)
	}
	if !got[1].NotAfter.IsZero() {
		t.Errorf("an event without NotAfter got %v", got[1].NotAfter)
	}
	for _, bad := range []string{`{"Code": "x"}`, `[{"State": "active", "EventId": "e", "NotBefore": "tomorrow"}]`} {
		if _, err := ParseMaintenance(bad); err == nil {
			t.Errorf("ParseMaintenance(%q) took it", bad)
		}
	}
	if got, err := ParseMaintenance("[]"); err != nil || len(got) != 0 {
		t.Errorf("empty list: %v, %v", got, err)
	}
}

func TestParseLifecycleState(t *testing.T) {
	for in, want := range map[string]string{"Terminated\n": "Terminated", "InService": "InService", "Warmed:Terminated": "Warmed:Terminated"} {
		if got, err := ParseLifecycleState(in); err != nil || got != want {
			t.Errorf("ParseLifecycleState(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "Terminated; rm -rf /", "<html>", strings.Repeat("A", 65)} {
		if _, err := ParseLifecycleState(bad); err == nil {
			t.Errorf("ParseLifecycleState(%q) took it", bad)
		}
	}
}

// TestReadNotices reads every kind of notice over IMDSv2 from a test server that refuses
// requests without a session token.
func TestReadNotices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := ec2test.StartNoticeIMDS(t)
	r := NewNoticeReader(m.Endpoint)

	t.Run("NothingAnnounced", func(t *testing.T) {
		n, err := r.ReadNotices(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Spot != nil || !n.Rebalance.IsZero() || len(n.Maintenance) != 0 || n.LifecycleState != "" {
			t.Errorf("notices = %+v, want none (every path answers 404)", n)
		}
		for _, p := range []string{SpotActionPath, RebalancePath, MaintenancePath, LifecycleStatePath} {
			if m.Gets(p) == 0 {
				t.Errorf("%s was not asked with a token", p)
			}
		}
		if m.Tokenless() != 0 {
			t.Errorf("%d requests without a token: IMDSv1 used", m.Tokenless())
		}
	})

	t.Run("Everything", func(t *testing.T) {
		m.Set(SpotActionPath, `{"action": "terminate", "time": "2026-12-01T18:16:54Z"}`)
		m.Set(RebalancePath, `{"noticeTime": "2026-12-01T18:14:54Z"}`)
		m.Set(MaintenancePath, `[{"Code": "instance-stop", "State": "active", "EventId": "instance-event-1", "NotBefore": "1 Dec 2026 18:14:53 GMT"}]`)
		m.Set(LifecycleStatePath, "Terminated")
		n, err := r.ReadNotices(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Spot == nil || n.Spot.Action != "terminate" || n.Rebalance.IsZero() || len(n.Maintenance) != 1 || n.LifecycleState != LifecycleTerminated {
			t.Errorf("notices = %+v", n)
		}
	})

	t.Run("OnePathBroken", func(t *testing.T) {
		m.SetStatus(RebalancePath, http.StatusInternalServerError, "oops")
		m.Set(MaintenancePath, "not json")
		n, err := r.ReadNotices(ctx)
		if err == nil || !strings.Contains(err.Error(), RebalancePath) || !strings.Contains(err.Error(), MaintenancePath) {
			t.Fatalf("err = %v, want one naming both broken paths", err)
		}
		if errors.Is(err, ErrMetadataUnreachable) {
			t.Errorf("a service that answers was called unreachable: %v", err)
		}
		if n.Spot == nil || n.LifecycleState != LifecycleTerminated {
			t.Errorf("the paths that answered were lost: %+v", n)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		m.Close()
		_, err := r.ReadNotices(ctx)
		if !errors.Is(err, ErrMetadataUnreachable) || !strings.Contains(err.Error(), m.Endpoint) {
			t.Errorf("err = %v, want unreachable naming %s", err, m.Endpoint)
		}
	})
}

// TestReadNotices_MetadataMock reads the notices amazon-ec2-metadata-mock serves in each of
// its modes, over IMDSv2 only.
func TestReadNotices_MetadataMock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	values := ec2test.IMDSValues{InstanceID: "i-0aaaaaaaaaaaaaaa1", Region: "eu-west-3", LocalIPv4: "10.9.0.10"}
	tests := []struct {
		name  string
		mode  []string
		check func(n Notices) bool
	}{
		{"Quiet", nil, func(n Notices) bool {
			return n.Spot == nil && n.Rebalance.IsZero() && len(n.Maintenance) == 0 && n.LifecycleState == ""
		}},
		{"SpotStop", []string{"spot", "-a", "stop"}, func(n Notices) bool {
			return n.Spot != nil && n.Spot.Action == "stop" && n.Spot.Time.After(time.Now()) && len(n.Maintenance) == 0
		}},
		{"SpotLater", []string{"spot", "-d", "1000000", "--rebalance-delay-sec", "0"}, func(n Notices) bool {
			return n.Spot == nil && !n.Rebalance.IsZero()
		}},
		{"EventsInstanceStop", []string{"events", "-o", "instance-stop", "-t", "active"}, func(n Notices) bool {
			return n.Spot == nil && len(n.Maintenance) == 1 && n.Maintenance[0].Code == "instance-stop" &&
				time.Since(n.Maintenance[0].NotBefore) < time.Hour
		}},
		{"EventsCompleted", []string{"events", "-t", "completed"}, func(n Notices) bool { return len(n.Maintenance) == 0 }},
		{"ASGTerminated", []string{"asglifecycle"}, func(n Notices) bool { return n.LifecycleState == LifecycleTerminated }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := values
			v.Notices = tt.mode
			m := ec2test.StartIMDS(t, v)
			n, err := NewNoticeReader(m.Endpoint).ReadNotices(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(n) {
				t.Errorf("notices = %+v (spot %+v)", n, n.Spot)
			}
			// The identity is still served next to the notices.
			id, err := LoadIdentity(ctx, m.Endpoint, Identity{})
			if err != nil || id.InstanceID != values.InstanceID {
				t.Errorf("identity in mode %v: %+v, %v", tt.mode, id, err)
			}
		})
	}
}
