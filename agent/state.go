package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateVersion is written into the state file so a later format can be told apart.
const stateVersion = 1

// persisted is what the agent keeps across restarts.
type persisted struct {
	Version int    `json:"version"`
	Node    string `json:"node"`
	// Displaced maps a group to the instance that took it while this node could not see that
	// instance. Without it, an agent restarted during a partition would have forgotten why
	// it must not take the group back.
	Displaced map[string]string `json:"displaced,omitempty"`
}

// loadState reads the state file; a missing file is an empty state.
func loadState(path, node string) (persisted, error) {
	st := persisted{Version: stateVersion, Node: node, Displaced: map[string]string{}}
	if path == "" {
		return st, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read state file: %w", err)
	}
	var got persisted
	if err := json.Unmarshal(b, &got); err != nil {
		return st, fmt.Errorf("read state file %s: %w", path, err)
	}
	if got.Version != stateVersion {
		return st, fmt.Errorf("read state file %s: version %d, this agent writes %d", path, got.Version, stateVersion)
	}
	if got.Node != node {
		return st, fmt.Errorf("read state file %s: written by %s, this is %s", path, got.Node, node)
	}
	for g, peer := range got.Displaced {
		st.Displaced[g] = peer
	}
	return st, nil
}

// saveState writes the state file atomically (temporary file, then rename).
func saveState(path string, st persisted) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// setDisplaced records (peer != "") or clears (peer == "") that peer took g while this node
// could not see it, and saves the state file when that changed.
func (a *Agent) setDisplaced(g *groupState, peer string) {
	if g.displacedBy == peer {
		return
	}
	g.displacedBy = peer
	st := persisted{Version: stateVersion, Node: a.id.InstanceID, Displaced: map[string]string{}}
	for _, gs := range a.groups {
		if gs.displacedBy != "" {
			st.Displaced[gs.cfg.Name] = gs.displacedBy
		}
	}
	if err := saveState(a.cfg.Control.StateFile, st); err != nil {
		a.logger.Error("could not save state: a restart would forget it", "error", err)
	}
}
