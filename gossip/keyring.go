package gossip

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// A key rotation without downtime, done on every node in turn at each step: install the new
// key (every node now accepts it, still sending with the old), use it (nodes send with the
// new key, which all accept), remove the old one. Each step is local to one node: memberlist's
// keyring is.

// ErrNoKeyring is returned by the keyring operations of a node whose gossip is not encrypted.
var ErrNoKeyring = errors.New("gossip is not encrypted (insecure_plaintext): there is no keyring")

// Keys returns the key this node sends with and the other keys it accepts.
func (g *Gossip) Keys() (primary []byte, others [][]byte, err error) {
	if g.keyring == nil {
		return nil, nil, ErrNoKeyring
	}
	for _, k := range g.keyring.GetKeys() {
		k = bytes.Clone(k)
		if primary == nil {
			primary = k
			continue
		}
		others = append(others, k)
	}
	return primary, others, nil
}

// InstallKey makes this node accept key as well; it keeps sending with its current key.
// Installing a key already there does nothing.
func (g *Gossip) InstallKey(key []byte) error {
	if g.keyring == nil {
		return ErrNoKeyring
	}
	if err := g.keyring.AddKey(bytes.Clone(key)); err != nil {
		return fmt.Errorf("install key: %w", err)
	}
	return nil
}

// UseKey makes this node send with key, which must be installed.
func (g *Gossip) UseKey(key []byte) error {
	if g.keyring == nil {
		return ErrNoKeyring
	}
	if err := g.keyring.UseKey(key); err != nil {
		return fmt.Errorf("use key: %w", err)
	}
	return nil
}

// RemoveKey makes this node stop accepting key. The key it sends with cannot be removed, and
// removing a key that is not installed is an error.
func (g *Gossip) RemoveKey(key []byte) error {
	if g.keyring == nil {
		return ErrNoKeyring
	}
	primary, others, _ := g.Keys()
	switch {
	case bytes.Equal(primary, key):
		return errors.New("remove key: this node sends with that key: use another one first")
	case !containsKey(others, key):
		return errors.New("remove key: that key is not installed")
	}
	if err := g.keyring.RemoveKey(key); err != nil {
		return fmt.Errorf("remove key: %w", err)
	}
	return nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// newKeyring builds the keyring of a node that sends with primary and accepts others too.
func newKeyring(primary []byte, others [][]byte) (*memberlist.Keyring, error) {
	kr, err := memberlist.NewKeyring(others, primary)
	if err != nil {
		return nil, fmt.Errorf("gossip: encryption key: %w", err)
	}
	return kr, nil
}
