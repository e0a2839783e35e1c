package ec2

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzIMDS is an IMDSv2 server whose answers the fuzz target sets before each call.
type fuzzIMDS struct {
	mu      sync.Mutex
	answers map[string]string // by metadata path; absent means 404
	token   string
	asked   []string // metadata paths asked for, in order
}

func (s *fuzzIMDS) set(answers map[string]string, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers, s.token, s.asked = answers, token, nil
}

func (s *fuzzIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
		if s.token == "" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
		w.Write([]byte(s.token))
		return
	}
	path, ok := strings.CutPrefix(r.URL.Path, "/latest/meta-data/")
	if !ok || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	s.asked = append(s.asked, path)
	if r.Header.Get("X-Aws-Ec2-Metadata-Token") != strings.TrimSpace(s.token) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	v, ok := s.answers[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write([]byte(v))
}

// FuzzLoadIdentity serves arbitrary answers from a metadata service and checks what
// LoadIdentity makes of them: it never crashes or hangs, reports exactly what the service
// said (trimmed) for each field, never reports success without the fields an agent needs,
// and names in its error every required field it could not get.
func FuzzLoadIdentity(f *testing.F) {
	f.Add("i-0aaaaaaaaaaaaaaa1", "eu-west-3", "eu-west-3b", "10.9.0.10", "0a:00:00:00:00:01", "10.9.0.0/16", "token", uint8(0))
	f.Add("i-1", "eu-west-3", "", "10.0.0.1", "", "", "token", uint8(0))
	f.Add("i-1", "eu-west-3", "eu-west-3a", "10.0.0.1", "0a:00:00:00:00:01", "10.0.0.0/16", "token", uint8(0b101))
	f.Add("  i-1\n", "\teu-west-3 ", "\n", "10.0.0.1\n", "0a:00:00:00:00:01\n", " 10.0.0.0/16 ", "token\n", uint8(0))
	f.Add("i-1", "eu-west-3", "eu-west-3a", "10.0.0.1", "../../instance-id", "x", "token", uint8(0))
	f.Add("i-1", "eu-west-3", "eu-west-3a", "10.0.0.1", "0a:00 00?x=1#y", "10.0.0.0/16", "token", uint8(0))
	f.Add("i-1", "eu-west-3", "eu-west-3a", "10.0.0.1", "0a", "10.0.0.0/16", "", uint8(0))
	f.Add("i-1", "eu-west-3", "eu-west-3a", "10.0.0.1", "0a", "10.0.0.0/16", "tok\nen", uint8(0))
	f.Add("i-1\x1b[2J", "eu-west-3\x00", "", "::1", "", "", "token", uint8(0xff))

	srv := &fuzzIMDS{}
	ts := httptest.NewServer(srv)
	f.Cleanup(ts.Close)

	f.Fuzz(func(t *testing.T, id, region, az, ip, mac, cidr, token string, missing uint8) {
		served := map[string]string{}
		fields := []struct {
			path, value string
		}{
			{"instance-id", id}, {"placement/region", region}, {"placement/availability-zone", az},
			{"local-ipv4", ip}, {"mac", mac}, {"network/interfaces/macs/" + strings.TrimSpace(mac) + "/vpc-ipv4-cidr-block", cidr},
		}
		for i, fl := range fields {
			if missing&(1<<i) == 0 {
				served[fl.path] = fl.value
			}
		}
		srv.set(served, token)

		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		got, err := LoadIdentity(ctx, ts.URL, Identity{})
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("LoadIdentity took %v against a service that answers at once", took)
		}

		// Every field holds what the service said for it, trimmed, or nothing.
		for _, c := range []struct {
			name, path, got string
		}{
			{"instance_id", "instance-id", got.InstanceID}, {"region", "placement/region", got.Region},
			{"availability_zone", "placement/availability-zone", got.AvailabilityZone},
			{"local_ipv4", "local-ipv4", got.LocalIPv4}, {"mac", "mac", got.MAC},
		} {
			if c.got != "" && c.got != strings.TrimSpace(served[c.path]) {
				t.Fatalf("%s = %q, but the service said %q", c.name, c.got, served[c.path])
			}
			if bad := CheckIdentityField(c.name, c.got); c.got != "" && bad != nil {
				t.Fatalf("%s = %q was taken, but it %v", c.name, c.got, bad)
			}
		}
		if got.VPCCIDR != "" && got.VPCCIDR != strings.TrimSpace(served["network/interfaces/macs/"+got.MAC+"/vpc-ipv4-cidr-block"]) {
			t.Fatalf("vpc_cidr = %q, but the service said %q for mac %q", got.VPCCIDR, served["network/interfaces/macs/"+got.MAC+"/vpc-ipv4-cidr-block"], got.MAC)
		}
		// A service that answers is asked for every required field: an optional field it
		// could not give stops nothing.
		headerSafe := !strings.ContainsFunc(token, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f })
		// A busy machine can time a request out, which is rightly taken for no answer.
		var ne net.Error
		timedOut := errors.As(err, &ne) && ne.Timeout()
		if strings.TrimSpace(token) != "" && headerSafe && !timedOut {
			for _, c := range []struct{ name, path, got string }{
				{"instance_id", "instance-id", got.InstanceID}, {"region", "placement/region", got.Region},
				{"local_ipv4", "local-ipv4", got.LocalIPv4},
			} {
				v, ok := served[c.path]
				valid := CheckIdentityField(c.name, strings.TrimSpace(v)) == nil
				if ok && valid && c.got == "" {
					t.Fatalf("%s was served as %q but not reported (err %v)", c.name, v, err)
				}
			}
			if err != nil && strings.Contains(err.Error(), "unreachable") {
				t.Fatalf("error %q calls a service that answered unreachable", err)
			}
		}
		if err == nil {
			if got.InstanceID == "" || got.Region == "" || got.LocalIPv4 == "" {
				t.Fatalf("no error but a required field is empty: %+v", got)
			}
			return
		}
		msg := err.Error()
		for _, c := range []struct{ name, value string }{
			{"instance_id", got.InstanceID}, {"region", got.Region}, {"local_ipv4", got.LocalIPv4},
		} {
			if c.value == "" && !strings.Contains(msg, c.name) {
				t.Fatalf("error %q does not name the missing %s", msg, c.name)
			}
		}
		if !strings.HasSuffix(msg, "} in the config") {
			t.Fatalf("error %q does not say how to give the missing fields", msg)
		}
	})
}
