package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/natganker/natganker/config"
)

// Keyring is the part of Membership that can change the gossip keys while the node runs.
// gossip.Gossip implements it.
type Keyring interface {
	Keys() (primary []byte, others [][]byte, err error)
	InstallKey(key []byte) error
	UseKey(key []byte) error
	RemoveKey(key []byte) error
}

// KeyringController is the control API's key rotation, apart from Controller so that a
// controller without gossip keys need not have it.
type KeyringController interface {
	// Keyring lists this node's gossip keys and, with an operation, changes them.
	Keyring(ctx context.Context, req KeyringRequest) (KeyringView, error)
}

var _ KeyringController = (*Agent)(nil)

// Keyring operations.
const (
	KeyringList    = "list"
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// KeyringRequest is one keyring operation: Op is list, install, use or remove, Key the
// key it concerns (raw bytes; JSON carries them as base64).
type KeyringRequest struct {
	Op  string `json:"op"`
	Key []byte `json:"key,omitempty"`
	// Fingerprint names an installed key instead of Key, for use and remove.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// KeyringView is a node's keyring after an operation. Keys are shown by fingerprint only.
type KeyringView struct {
	Keys []KeyView `json:"keys"`
	// Saved is the key file that now holds the keyring; empty when the key is written in
	// the config (encrypt_key), and then Note says that the change lasts until a restart.
	Saved string `json:"saved,omitempty"`
	Note  string `json:"note,omitempty"`
}

// KeyView is one key of a keyring.
type KeyView struct {
	Fingerprint string `json:"fingerprint"`
	// Primary is the key this node sends with; the others are only accepted.
	Primary bool `json:"primary"`
}

// KeyFingerprint names a key without showing it: the start of its SHA-256, in hex.
func KeyFingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Keyring lists this node's gossip keys and, with an operation, changes them, keeping the
// key file in step: a change that cannot be saved is undone, so that a restart never brings
// back another keyring than the running one.
func (a *Agent) Keyring(ctx context.Context, req KeyringRequest) (KeyringView, error) {
	kr, ok := a.gossip.(Keyring)
	if !ok {
		return KeyringView{}, errors.New("keyring: this agent's gossip has no keyring")
	}
	var view KeyringView
	var opErr error
	err := a.do(ctx, func() {
		view, opErr = a.keyringOp(kr, req)
	})
	if err != nil {
		return KeyringView{}, err
	}
	return view, opErr
}

// keyringOp runs in the run goroutine, so that operations and file writes never interleave.
func (a *Agent) keyringOp(kr Keyring, req KeyringRequest) (KeyringView, error) {
	primary, others, err := kr.Keys()
	if err != nil {
		return KeyringView{}, fmt.Errorf("keyring: %w", err)
	}
	if req.Fingerprint != "" && req.Key == nil && (req.Op == KeyringUse || req.Op == KeyringRemove) {
		for _, k := range append([][]byte{primary}, others...) {
			if KeyFingerprint(k) == req.Fingerprint {
				req.Key = k
			}
		}
		if req.Key == nil {
			return KeyringView{}, fmt.Errorf("keyring %s: no installed key has fingerprint %s", req.Op, req.Fingerprint)
		}
	}
	if req.Op != KeyringList {
		if n := len(req.Key); n != 16 && n != 24 && n != 32 {
			return KeyringView{}, fmt.Errorf("keyring %s: a key is 16, 24 or 32 bytes (got %d)", req.Op, n)
		}
	}
	var undo func() error
	switch req.Op {
	case KeyringList:
	case KeyringInstall:
		if bytes.Equal(primary, req.Key) || containsKey(others, req.Key) {
			break
		}
		if len(others)+1 >= config.MaxKeys {
			return KeyringView{}, fmt.Errorf("keyring install: %d keys already, the most a keyring holds is %d: remove one first", len(others)+1, config.MaxKeys)
		}
		err = kr.InstallKey(req.Key)
		undo = func() error { return kr.RemoveKey(req.Key) }
	case KeyringUse:
		if bytes.Equal(primary, req.Key) {
			break
		}
		if !containsKey(others, req.Key) {
			return KeyringView{}, errors.New("keyring use: that key is not installed: install it on every node first")
		}
		err = kr.UseKey(req.Key)
		undo = func() error { return kr.UseKey(primary) }
	case KeyringRemove:
		err = kr.RemoveKey(req.Key)
		undo = func() error { return kr.InstallKey(req.Key) }
	default:
		return KeyringView{}, fmt.Errorf("keyring: unknown operation %q (list, install, use or remove)", req.Op)
	}
	if err != nil {
		return KeyringView{}, fmt.Errorf("keyring: %w", err)
	}
	view := KeyringView{}
	if undo != nil {
		if path := a.cfg.Gossip.EncryptKeyFile; path != "" {
			p, o, _ := kr.Keys()
			if err := config.WriteKeyFile(path, p, o); err != nil {
				if uerr := undo(); uerr != nil {
					a.logger.Error("keyring change could not be saved nor undone: the key file and the running keyring differ",
						"op", req.Op, "key", KeyFingerprint(req.Key), "save_error", err, "undo_error", uerr)
				}
				return KeyringView{}, fmt.Errorf("keyring %s undone: %w", req.Op, err)
			}
			view.Saved = path
		} else {
			view.Note = "the gossip key is written in the config (encrypt_key): this change lasts until the agent restarts; move the keys to an encrypt_key_file to keep them"
		}
		a.logger.Info("gossip keyring changed", "op", req.Op, "key", KeyFingerprint(req.Key), "saved", view.Saved)
	}
	p, o, _ := kr.Keys()
	view.Keys = append(view.Keys, KeyView{Fingerprint: KeyFingerprint(p), Primary: true})
	for _, k := range o {
		view.Keys = append(view.Keys, KeyView{Fingerprint: KeyFingerprint(k)})
	}
	return view, nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}
