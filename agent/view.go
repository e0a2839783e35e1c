package agent

import (
	"time"

	"github.com/natganker/natganker/config"
	"github.com/natganker/natganker/ec2"
)

// quietProbes is how many probe intervals without any sign of life from the owner make this
// node start confirming before memberlist's suspicion timeout runs out, so that the
// confirmation is ready when the death is declared.
const quietProbes = 2.5

// view is the snapshot Decide works on: facts only, every rule stays in Decide.
func (a *Agent) view(g *groupState, now time.Time) View {
	healthy, reason := a.healthy()
	v := View{
		Now: now, Self: a.id.InstanceID, Peers: make(map[string]Peer, len(a.members)+1),
		ManualFailback: g.cfg.Failback == config.FailbackManual, FailbackDelay: g.cfg.FailbackDelay,
		Observed: g.observed, ObservedAt: g.obs.ReadAt, Owner: g.owner, OwnerSince: g.ownerAt,
		LayoutSince: g.layoutAt, SelfEligibleSince: g.eligibleSince, DisplacedBy: g.displacedBy,
		StartupGraceOver: now.Sub(a.started) >= a.startupGrace(), Forced: g.force && !g.claiming,
	}
	for name, m := range a.members {
		p := peerOf(m, g.cfg.Name, now)
		p.Silent = p.Alive && a.silentDead(name, now)
		v.Peers[name] = p
	}
	v.Peers[a.id.InstanceID] = Peer{
		Name: a.id.InstanceID, Alive: true, Since: a.started, Healthy: healthy, Reason: reason,
		InGroup: true, Priority: g.cfg.Priority, Yielded: g.yielded, Leaving: a.leave != nil, Owns: g.owner == a.id.InstanceID,
		NoRoom: g.noRoom,
	}
	// Drift is judged on a read taken since the last decision, so that a repair is not
	// asked for twice on the same read.
	if g.fresh || g.owner != a.id.InstanceID {
		v.Routes = a.routes(g, g.obs)
		v.Misplaced = g.obs.Misplaced
	}
	if g.owner != "" && g.owner != a.id.InstanceID {
		v.OwnerState = g.obs.Instances[g.owner].State
		v.OwnerRunning = running(v.OwnerState)
		if c := a.burst(g.owner, now); c != nil {
			v.OwnerConfirmedDead = a.confirmedDead(g.owner, now)
			v.OwnerOtherKey = c.probe.KeyMismatch()
		}
		if a.isAlive(g.owner) {
			last := a.gossip.LastContact(g.owner)
			v.OwnerQuiet = !last.IsZero() && now.Sub(last) >= a.quietAfter(g.owner, now)
		}
	}
	return v
}

// running reports whether an EC2 instance state may be forwarding traffic; a state EC2 did not
// report counts as running.
func running(state string) bool {
	return state == "" || state == ec2.InstanceStateUnknown || state == "pending" || state == "running"
}
