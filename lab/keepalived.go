package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// keepalivedConfig renders keepalived's configuration for host: VRRP unicast between the
// NATs over the private segment with default timers (advert_int 1), no virtual address,
// and a notify script that moves the EIP and routes through the AWS CLI.
func (l *Lab) keepalivedConfig(host string) string {
	peer, prio := Nat2, 200
	if host == Nat2 {
		peer, prio = Nat1, 100
	}
	return fmt.Sprintf(`global_defs {
  router_id lab-%[1]s
  script_user root
  enable_script_security
}

vrrp_instance egress {
  state BACKUP
  interface priv0
  virtual_router_id 51
  priority %[2]d
  advert_int 1
  unicast_src_ip %[3]s
  unicast_peer {
    %[4]s
  }
  notify_master "%[5]s"
}
`, host, prio, natIP(host), natIP(peer), l.notifyScript(host))
}

func (l *Lab) notifyScript(host string) string {
	return filepath.Join(l.opts.Dir, "notify-master-"+host+".sh")
}

// NotifyLog is where host's keepalived notify script records when it started and ended.
func (l *Lab) NotifyLog(host string) string {
	return filepath.Join(l.opts.Dir, "notify-"+host+".log")
}

// writeNotifyScript writes the script keepalived runs on becoming MASTER: associate the
// EIP with this instance, then replace the default route of every table, one aws call
// after another, as the usual keepalived-on-AWS recipes do.
func (l *Lab) writeNotifyScript(host string) error {
	endpoint := l.opts.AgentEndpoint
	if endpoint == "" {
		endpoint = l.MotoEndpoint()
	}
	awsBin, err := exec.LookPath("aws")
	if err != nil {
		return fmt.Errorf("find aws cli: %w", err)
	}
	id := l.world.Instances[host].ID
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# keepalived notify_master for lab host %s\n", host)
	fmt.Fprintf(&b, "exec >>%q 2>&1\n", l.NotifyLog(host))
	fmt.Fprintf(&b, "echo \"start $(date +%%s%%N)\"\n")
	fmt.Fprintf(&b, "export PATH=%q HOME=%q AWS_ACCESS_KEY_ID=lab AWS_SECRET_ACCESS_KEY=lab AWS_DEFAULT_REGION=%s\n", os.Getenv("PATH"), os.Getenv("HOME"), Region)
	fmt.Fprintf(&b, "%s --endpoint-url %s ec2 associate-address --allocation-id %s --instance-id %s --allow-reassociation >/dev/null\n",
		awsBin, endpoint, l.world.AllocationID, id)
	for _, t := range l.world.Tables() {
		fmt.Fprintf(&b, "%s --endpoint-url %s ec2 replace-route --route-table-id %s --destination-cidr-block 0.0.0.0/0 --instance-id %s\n",
			awsBin, endpoint, t, id)
	}
	fmt.Fprintf(&b, "echo \"done $(date +%%s%%N)\"\n")
	return os.WriteFile(l.notifyScript(host), []byte(b.String()), 0o700)
}

// StaticDatapath configures forwarding and masquerade on a NAT by hand, as a keepalived
// setup does at boot; natganker's agent does this itself.
func StaticDatapath(ctx context.Context, host string) error {
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.send_redirects", "0"}, {"net.ipv4.conf.priv0.send_redirects", "0"}} {
		if err := sysctl(ctx, NS(host), kv[0], kv[1]); err != nil {
			return err
		}
	}
	rules := fmt.Sprintf(`table ip labnat
delete table ip labnat
table ip labnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr %s oifname "pub0" masquerade
  }
}
`, VPCCIDR)
	f := filepath.Join(os.TempDir(), "natganker-lab-nft-"+host+".nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		return err
	}
	defer os.Remove(f)
	_, err := nsRun(ctx, NS(host), "nft", "-f", f)
	return err
}

func (l *Lab) startKeepalived(ctx context.Context, n *node) error {
	if err := StaticDatapath(ctx, n.host); err != nil {
		return fmt.Errorf("datapath on %s: %w", n.host, err)
	}
	if err := l.writeNotifyScript(n.host); err != nil {
		return err
	}
	cfg := filepath.Join(l.opts.Dir, "keepalived-"+n.host+".conf")
	if err := os.WriteFile(cfg, []byte(l.keepalivedConfig(n.host)), 0o644); err != nil {
		return fmt.Errorf("write keepalived config: %w", err)
	}
	killKeepalivedIn(ctx, n.host)
	pid := func(s string) string { return filepath.Join(l.opts.Dir, "keepalived-"+n.host+"-"+s+".pid") }
	cmd := nsCommand(NS(n.host), "keepalived", "-n", "-l", "-D", "-f", cfg, "-p", pid("main"), "-r", pid("vrrp"), "-c", pid("checkers"))
	return l.startNodeProc(n, "keepalived", "keepalived", cmd, true, l.parseKeepalivedLog)
}

func (l *Lab) parseKeepalivedLog(host string, r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "Entering ")
		if i < 0 || !strings.Contains(line, " STATE") {
			continue
		}
		at := time.Now()
		state := strings.TrimSuffix(strings.Fields(line[i+len("Entering "):])[0], ",")
		l.rec.mu.Lock()
		l.rec.transitions = append(l.rec.transitions, Transition{At: at, Host: host, State: state})
		l.rec.mu.Unlock()
		l.tl.Add(at, host, "keepalived: entering %s state", state)
	}
}

// NotifyTimes reads host's notify log: when each notify_master run started and ended.
func (l *Lab) NotifyTimes(host string) (starts, dones []time.Time) {
	b, err := os.ReadFile(l.NotifyLog(host))
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(f[1], &ns); err != nil {
			continue
		}
		switch f[0] {
		case "start":
			starts = append(starts, time.Unix(0, ns))
		case "done":
			dones = append(dones, time.Unix(0, ns))
		}
	}
	return starts, dones
}

// killKeepalivedIn ends keepalived and everything it started (notify scripts, aws CLI
// calls) in host's namespace; only the metadata mock, which stands for the EC2 host, stays.
func killKeepalivedIn(ctx context.Context, host string) {
	out, err := run(ctx, "ip", "netns", "pids", NS(host))
	if err != nil {
		return
	}
	for _, p := range strings.Fields(out) {
		comm, err := os.ReadFile("/proc/" + p + "/comm")
		if err != nil {
			continue
		}
		if c := strings.TrimSpace(string(comm)); !strings.HasPrefix(c, "ec2-metadata") {
			killPID(p)
		}
	}
}
