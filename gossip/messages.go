package gossip

import (
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// handlerBox holds the message handler for atomic swaps.
type handlerBox struct{ fn func(msg []byte) }

// OnMessage sets the handler for messages peers send with Send; nil drops them. memberlist
// calls it on its packet path: it must not block, and may keep the slice (its own copy).
func (g *Gossip) OnMessage(fn func(msg []byte)) {
	g.handler.Store(&handlerBox{fn})
}

// Sealed reports whether the cluster runs with a key: messages are then encrypted and
// authenticated by it, and a peer without the key can neither read nor forge them.
func (g *Gossip) Sealed() bool { return g.keyring != nil }

// ErrNotMember is Send's error for a name that is not a live member.
var ErrNotMember = errors.New("not a live member")

// Send sends msg to the member called name: one UDP packet, or over TCP when reliable.
// Messages are sealed like the rest of the gossip when the cluster has a key.
func (g *Gossip) Send(name string, msg []byte, reliable bool) error {
	var to *memberlist.Node
	for _, n := range g.ml.Members() {
		if n.Name == name {
			to = n
			break
		}
	}
	if to == nil || to.State != memberlist.StateAlive {
		return fmt.Errorf("send to %s: %w", name, ErrNotMember)
	}
	if reliable {
		return g.ml.SendReliable(to, msg)
	}
	return g.ml.SendBestEffort(to, msg)
}

// notify hands a user message to the handler.
func (g *Gossip) notify(msg []byte) {
	if h := g.handler.Load(); h != nil && h.fn != nil {
		h.fn(append([]byte(nil), msg...))
	}
}
