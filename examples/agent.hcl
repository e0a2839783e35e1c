# natganker agent configuration (usually /etc/natganker/agent.hcl).
#
# Every NAT instance of a cluster runs one agent. The agents watch each other over an
# encrypted gossip protocol. Each "group" below is one Elastic IP plus the route tables
# whose default route must point at whichever instance holds that IP. The healthy agent
# with the highest priority for a group owns it; when it dies, the next one moves the
# Elastic IP to itself and repoints the routes.
#
# Give every instance the same file except for the priorities (and node, if you use it).
# All settings except "group" blocks and the gossip key are optional; the values shown
# are the defaults unless a comment says otherwise. The addresses and ids below are
# placeholders: replace them with your own.

# node: what this instance is. Leave it out on EC2: the agent asks the instance metadata
# service (IMDS). Set fields here only to override IMDS, for example in a lab.
node {
  # instance_id       = "i-0123456789abcdef0"  # also the agent's name in the cluster
  # region            = "us-east-1"
  # availability_zone = "us-east-1a"
  # local_ipv4        = "198.18.1.11"          # primary private address
  # mac               = "0e:00:00:00:00:11"    # MAC of the primary interface
  # vpc_cidr          = "198.18.0.0/16"        # used as the masquerade source by default
  # imds_endpoint     = "http://169.254.169.254"
}

# gossip: how the agents find and watch each other (hashicorp/memberlist). Open this port
# for TCP and UDP between the NAT instances in their security group.
gossip {
  # Address and port to listen on, "host" or "host:port".
  bind = "0.0.0.0:7946"

  # Address peers should use to reach this agent. Empty: the instance's private IPv4
  # address from IMDS, on the bind port. Set it on instances with several interfaces.
  advertise = ""

  # The other agents (listing this instance too is harmless, so one list fits all).
  # IPs or DNS names, with or without a port (the bind port when omitted). Agents that
  # go missing from the cluster are re-joined from this list every rejoin_interval.
  peers = ["198.18.1.11", "198.18.2.11:7946"]

  # Encryption key shared by all agents: 16, 24 or 32 bytes, base64-encoded. Without it
  # anyone who can send one UDP packet to the gossip port can declare an agent dead and
  # cause a failover. Create it once and copy it to every instance, readable by root only:
  #   umask 077; natganker-agent keygen > /etc/natganker/gossip.key
  # Change it on a running cluster with `natganker-agent keyring` (see the README).
  # A relative path is taken relative to the directory of this file. Alternatively put
  # the base64 text itself in encrypt_key = "..." (not both).
  encrypt_key_file = "/etc/natganker/gossip.key"

  # Set to true to run without a key (trusted labs only). Default false.
  insecure_plaintext = false

  # Failure-detection timings. "fast" (default) declares a dead peer in about a second:
  # probe every 200ms, ack timeout 100ms, suspicion_mult 3, gossip every 100ms. "lan" is
  # memberlist's LAN defaults (1s, 500ms, 4, 200ms): about 5-7 s, for busy or slow hosts.
  profile = "fast"

  # Any of these overrides the profile's value (uncomment to use):
  # probe_interval  = "200ms"  # time between probes of a random peer
  # probe_timeout   = "100ms"  # time to wait for an ack; less than probe_interval
  # suspicion_mult  = 3        # how long a suspect peer has to refute, in probe intervals
  # gossip_interval = "100ms"  # time between gossip rounds

  # How often to re-join peers from the list above that are missing from the cluster
  # (after a network partition heals, memberlist alone never reconnects them).
  rejoin_interval = "5s"

  # Before a group is taken over from a peer that looks dead, the agent probes that peer
  # directly confirm_probes times within confirm_timeout, each with a TCP connection to its
  # gossip port; one answer (or one accepted connection) cancels the takeover.
  confirm_probes  = 10
  confirm_timeout = "150ms"

  # Each agent pings one peer this often: the owner of a group if it would replace it, else
  # the agent ranked just above it; two intervals without an answer start the confirmation
  # burst at once, without waiting for memberlist's verdict.
  # From the profile (fast: 50ms, lan: 500ms); "0s" turns it off.
  # heartbeat_interval = "50ms"
}

# group: one unit of failover. Repeat the block for each Elastic IP, for example one
# group per availability zone, each preferring a different instance.
group "egress" {
  # This instance's priority for the group, 1..1000, required. The healthy agent with
  # the highest priority owns the group; give each instance a different value.
  priority = 100

  # The Elastic IP moved to the owner: an allocation id or a public IPv4 address. Required.
  elastic_ip = "eipalloc-0123456789abcdef0"

  # Route tables whose routes for "destinations" point at the owner. Any combination of
  # the three ways below; at least one is needed (with a single group, discovery is on by
  # default).
  route_tables = ["rtb-0a1b2c3d4e5f60718", "rtb-0f1e2d3c4b5a69788"]

  # Also manage every route table of the VPC carrying all these tags.
  route_table_tags = {
    "natganker:group" = "egress"
  }

  # Also manage every route table of the VPC whose destination route already points at
  # a member of the cluster. Discovery cannot tell one group's tables from another's, so
  # the default is true when the file has a single group and false when it has several;
  # at most one group may set it to true.
  discover_route_tables = true

  # Routes pointed at the owner, IPv4 CIDRs. Default ["0.0.0.0/0"].
  destinations = ["0.0.0.0/0"]

  # What the routes point at: "instance" (default) or "eni" (the owner's primary network
  # interface).
  target = "instance"

  # When an agent with a higher priority comes back: "auto" (default) hands the group
  # back to it once it has been healthy for failback_delay; "manual" leaves the group
  # where it is until an operator moves it with the CLI (takeover or yield).
  failback       = "auto"
  failback_delay = "30s"  # at least 1s
}

# ec2: the EC2 API client. Credentials come from the instance profile as usual; the role
# needs ec2:DescribeInstances, DescribeAddresses, DescribeRouteTables, AssociateAddress,
# CreateRoute, ReplaceRoute and ModifyInstanceAttribute.
ec2 {
  # region   = "us-east-1"               # default: the instance's region
  # endpoint = "http://127.0.0.1:5000"   # default: AWS; set it for a local EC2 emulator
  max_concurrency    = 64     # EC2 calls in flight at once during a takeover, 1..64
  # Time limit for one attempt of one EC2 API call. A failed attempt is logged at warn
  # level and retried, up to 5 attempts with backoff, so one call can take several times
  # this long.
  call_timeout       = "5s"
  reconcile_interval = "10s"  # how often EC2 is re-read and corrected, at least 1s
}

# control: the unix socket (mode 0600) the natganker CLI uses to talk to the agent, and the
# file where the agent keeps what must survive its restarts: which peer took a group while
# this agent could not see it (a partition), so that a restarted agent does not take the
# group back across the partition. "" keeps nothing.
control {
  socket     = "/run/natganker/agent.sock"
  state_file = "/var/lib/natganker/state.json"
}

# log: level is trace, debug, info, warn or error; format is auto (text on a terminal,
# JSON otherwise), text or json.
log {
  level  = "info"
  format = "auto"
}

# datapath: the kernel side of a NAT instance. With manage = true the agent enables
# ip_forward, disables ICMP redirects and masquerades traffic leaving public_interface,
# and puts them back if anything changes them. Default false (set it up yourself).
datapath {
  manage           = true
  public_interface = "eth0"  # required when manage = true
  # masquerade_source = "198.18.0.0/16"  # default: the VPC CIDR from IMDS
  check_interval = "1s"  # how often the settings are checked and repaired

  # Optional: a TCP host:port reached through the public side to prove that egress
  # works; an agent whose probe fails counts as unhealthy and gives up its groups.
  # egress_probe       = "198.18.200.1:443"
  egress_probe_timeout = "1s"
}

# telemetry: a Prometheus /metrics endpoint, off unless prometheus_listen is set. Keep it
# on a private address: it tells who owns what.
telemetry {
  # prometheus_listen = "127.0.0.1:9720"
}

# hooks: programs run on events, like keepalived's notify scripts. Each is an argv (no
# shell) whose first element is an absolute path. They get NATGANKER_EVENT, NATGANKER_GROUP,
# NATGANKER_FROM, NATGANKER_TO, NATGANKER_REASON and the takeover timings
# (NATGANKER_DETECTED_MS…) in the environment, on_member NATGANKER_MEMBER and
# NATGANKER_STATE; their output is logged; they never delay a takeover, and each event runs
# each hook once. A hook still running after timeout is killed with its process group. See
# the README, "Event hooks".
hooks {
  # on_acquire = ["/usr/local/bin/natganker-notify", "acquire"]  # this node took a group
  # on_release = ["/usr/local/bin/natganker-notify", "release"]  # this node lost or handed one over
  # on_member  = ["/usr/local/bin/natganker-notify", "member"]   # a peer joined, left, died or changed health
  timeout = "30s"
}

# handoff: advance notices of this instance's end, read from the instance metadata service,
# on which the agent hands its groups to a peer before the instance goes away, as it does
# on SIGTERM, so that the private subnets lose no traffic.
handoff {
  spot_interruption     = true   # spot/instance-action: two minutes' warning
  rebalance             = false  # events/recommendations/rebalance: a risk, not a notice
  scheduled_maintenance = true   # events/maintenance/scheduled: a reboot, stop or retirement
  maintenance_lead      = "10m"  # hand over this long before a scheduled event starts
  asg_terminated        = true   # autoscaling/target-lifecycle-state becomes Terminated
  poll_interval         = "2s"
}

# conntrack_sync: established connections across a failover. The owner sends its masqueraded
# flows to the peers, sealed with the gossip key; a peer that takes a group over installs
# them, so that a download or a server push goes on through it.
conntrack_sync {
  enabled         = true
  max_flows       = 262144
  flush_interval  = "100ms"
  resync_interval = "1m"
}
