package ec2

import (
	"context"
	"maps"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/natganker/natganker/ec2/ec2test"
)

func TestLoadIdentity(t *testing.T) {
	values := ec2test.IMDSValues{
		InstanceID: "i-0aaaaaaaaaaaaaaa1", Region: "eu-west-3", AvailabilityZone: "eu-west-3b",
		LocalIPv4: "10.9.0.10", MAC: "0a:00:00:00:00:01", VPCCIDR: "10.9.0.0/16",
	}
	mock := ec2test.StartIMDS(t, values)

	t.Run("AllFromMetadata", func(t *testing.T) {
		got, err := LoadIdentity(ctxT(t), mock.Endpoint, Identity{})
		if err != nil {
			t.Fatal(err)
		}
		want := Identity{InstanceID: values.InstanceID, Region: values.Region, AvailabilityZone: values.AvailabilityZone,
			LocalIPv4: values.LocalIPv4, MAC: values.MAC, VPCCIDR: values.VPCCIDR}
		if got != want {
			t.Errorf("identity = %+v, want %+v", got, want)
		}
	})

	t.Run("OverrideWins", func(t *testing.T) {
		got, err := LoadIdentity(ctxT(t), mock.Endpoint, Identity{LocalIPv4: "10.9.0.99", VPCCIDR: "10.0.0.0/8"})
		if err != nil {
			t.Fatal(err)
		}
		if got.LocalIPv4 != "10.9.0.99" || got.VPCCIDR != "10.0.0.0/8" || got.InstanceID != values.InstanceID {
			t.Errorf("identity = %+v", got)
		}
	})

	// The metadata service slow, then down, behind the proxy.
	t.Run("ThroughProxy", func(t *testing.T) {
		p, ep := ec2test.StartIMDSProxy(t, mock, ec2test.ProxyOptions{})
		p.SetLatency(200*time.Millisecond, 100*time.Millisecond)
		got, err := LoadIdentity(ctxT(t), ep, Identity{})
		if err != nil || got.InstanceID != values.InstanceID {
			t.Fatalf("slow metadata: %+v, %v", got, err)
		}
		p.SetLatency(0, 0)
		p.StartOutage()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = LoadIdentity(ctx, ep, Identity{})
		if err == nil || !strings.Contains(err.Error(), "instance metadata unreachable at "+ep) || ctx.Err() != nil {
			t.Errorf("metadata down: err = %v (context %v), want unreachable", err, ctx.Err())
		}
		if p.Faults()[ec2test.FaultOutage] == 0 {
			t.Errorf("faults = %v, want calls refused by the outage", p.Faults())
		}
		p.EndOutage()
		if _, err := LoadIdentity(ctxT(t), ep, Identity{}); err != nil {
			t.Errorf("after the outage: %v", err)
		}
	})

	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	t.Run("Hangs", func(t *testing.T) {
		// Accepts connections (the kernel does) but never answers.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		_, err = LoadIdentity(context.Background(), "http://"+l.Addr().String(), Identity{})
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "instance metadata unreachable at http://"+l.Addr().String()) {
			t.Errorf("err = %v, want unreachable", err)
		}
		if took > 3*time.Second {
			t.Errorf("took %v, want about 2s (two attempts of 1s)", took)
		}
	})

	tests := []struct {
		name     string
		override Identity
		wantErr  string
	}{
		{"NothingOverridden", Identity{},
			"instance metadata unreachable at " + closed + ": "},
		{"NothingOverriddenNamesAll", Identity{},
			"; set node { instance_id, region, local_ipv4 } in the config"},
		{"SomeOverridden", Identity{InstanceID: "i-1", Region: "eu-west-3"},
			"; set node { local_ipv4 } in the config"},
		{"RequiredOverridden", Identity{InstanceID: "i-1", Region: "eu-west-3", LocalIPv4: "10.0.0.1"}, ""},
	}
	for _, tt := range tests {
		t.Run("Unreachable/"+tt.name, func(t *testing.T) {
			start := time.Now()
			got, err := LoadIdentity(context.Background(), closed, tt.override)
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %v", took)
			}
			if tt.wantErr == "" {
				if err != nil || got.InstanceID != tt.override.InstanceID || got.MAC != "" {
					t.Errorf("got %+v, %v; want the override and no error", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadIdentity_GarbageAnswers serves answers that are not EC2's: each is refused with an
// error naming the field and what was wrong, and nothing of it reaches a metadata path.
func TestLoadIdentity_GarbageAnswers(t *testing.T) {
	good := map[string]string{
		"instance-id": "i-0aaaaaaaaaaaaaaa1", "placement/region": "eu-west-3", "placement/availability-zone": "eu-west-3b",
		"local-ipv4": "198.18.0.10", "mac": "0a:00:00:00:00:01",
		"network/interfaces/macs/0a:00:00:00:00:01/vpc-ipv4-cidr-block": "198.18.0.0/16",
	}
	for _, tt := range []struct {
		name, path, value, field, want string
	}{
		{"IPv6LocalAddress", "local-ipv4", "::1", "local_ipv4", "must be an IPv4 address"},
		{"NewlineInID", "instance-id", "i-1\ninjected=1", "instance_id", "must look like i-"},
		{"PathInMAC", "mac", "../../instance-id", "mac", "must be a MAC address"},
		{"UpperCaseMAC", "mac", "0A:00:00:00:00:01", "mac", "must be a MAC address"},
		{"HostBitsInCIDR", "network/interfaces/macs/0a:00:00:00:00:01/vpc-ipv4-cidr-block", "198.18.0.1/16", "vpc_cidr", "must be an IPv4 CIDR"},
		{"HugeRegion", "placement/region", strings.Repeat("a", 1<<20), "region", "bytes long"},
		{"EscapeInZone", "placement/availability-zone", "eu-west-3b\x1b[2J", "availability_zone", "must be an availability zone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := &fuzzIMDS{}
			answers := maps.Clone(good)
			answers[tt.path] = tt.value
			srv.set(answers, "token")
			ts := httptest.NewServer(srv)
			defer ts.Close()
			_, err := LoadIdentity(context.Background(), ts.URL, Identity{})
			if err == nil {
				t.Fatalf("answer %q for %s was taken", tt.value, tt.path)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.field+": answer") || !strings.Contains(msg, tt.want) ||
				!strings.HasSuffix(msg, "set node { "+tt.field+" } in the config") {
				t.Fatalf("error %q does not say that %s %s and how to give it", msg, tt.field, tt.want)
			}
			if strings.ContainsAny(msg, "\n\x1b") || len(msg) > 1000 {
				t.Fatalf("error carries the raw answer: %q", msg)
			}
			for _, p := range srv.asked {
				if strings.Contains(p, "..") {
					t.Fatalf("asked for metadata path %q", p)
				}
			}
		})
	}
}
