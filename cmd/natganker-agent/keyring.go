package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/natganker/natganker/agent"
	"github.com/natganker/natganker/agent/control"
)

// KeyringCommand lists and changes the gossip keys of the local agent.
type KeyringCommand struct {
	stdout io.Writer
	stdin  io.Reader

	install, use, remove string
	list, json           bool
	socket               string
}

// Synopsis returns a one-line description.
func (c *KeyringCommand) Synopsis() string {
	return "list or change the gossip keys of the running agent (key rotation)"
}

// Usage returns the help text.
func (c *KeyringCommand) Usage() string {
	return `Usage: ` + progName + ` keyring [-list | -install KEY | -use KEY | -remove KEY] [-json] [-socket PATH]

Lists or changes the gossip keys of the local running agent. Keys are shown by
fingerprint (the start of their SHA-256), never in full; "primary" is the key the
agent sends with, the others it only accepts.

A change applies to this agent only, at once, and is written to the key file
(gossip.encrypt_key_file: the primary key on the first line, the others after it),
so that a restart keeps it. When the key is written in the config itself
(encrypt_key), the change lasts until the agent restarts and the answer says so.

To change the key of a running cluster without losing a member, run each step on
every node before the next step:
  1. ` + progName + ` keyring -install NEWKEY   every node accepts the new key
  2. ` + progName + ` keyring -use NEWKEY       every node sends with it
  3. ` + progName + ` keyring -remove OLDKEY    no node accepts the old one
Use "` + progName + ` keygen" to make NEWKEY.

Flags:
  -list          list the keys (the default)
  -install KEY   accept KEY (base64) as well
  -use KEY       send with KEY, which must be installed (base64, or a fingerprint)
  -remove KEY    stop accepting KEY (base64, or a fingerprint); not the one in use
  -json          print the agent's answer as JSON
` + socketFlagHelp + `

KEY "-" reads the key from standard input, which keeps it out of the shell history
and the process list.

` + clientExitHelp + "\n"
}

// flags binds the command's flags to its fields.
func (c *KeyringCommand) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("keyring", flag.ContinueOnError)
	fs.BoolVar(&c.list, "list", false, "")
	fs.StringVar(&c.install, "install", "", "")
	fs.StringVar(&c.use, "use", "", "")
	fs.StringVar(&c.remove, "remove", "", "")
	fs.BoolVar(&c.json, "json", false, "")
	fs.StringVar(&c.socket, "socket", defaultSocket(), "")
	return fs
}

// Run executes the command.
func (c *KeyringCommand) Run(ctx context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	req := agent.KeyringRequest{Op: agent.KeyringList}
	var arg string
	n := 0
	for _, o := range []struct{ op, arg string }{
		{agent.KeyringInstall, c.install}, {agent.KeyringUse, c.use}, {agent.KeyringRemove, c.remove},
	} {
		if o.arg != "" {
			req.Op, arg = o.op, o.arg
			n++
		}
	}
	if n > 1 || (n == 1 && c.list) {
		return usageErrorf("keyring", "give one of -list, -install, -use, -remove")
	}
	if n == 1 {
		if err := c.parseKey(&req, arg); err != nil {
			return err
		}
	}
	view, err := control.NewClient(c.socket).Keyring(ctx, req)
	if err != nil {
		return err
	}
	if c.json {
		return writeJSON(c.stdout, view)
	}
	for _, k := range view.Keys {
		role := "accepted"
		if k.Primary {
			role = "primary (sent with)"
		}
		fmt.Fprintf(c.stdout, "%s  %s\n", k.Fingerprint, role)
	}
	if view.Saved != "" {
		fmt.Fprintf(c.stdout, "saved to %s\n", view.Saved)
	}
	if view.Note != "" {
		fmt.Fprintf(c.stdout, "note: %s\n", view.Note)
	}
	return nil
}

// parseKey fills req from a key argument: base64, "-" for standard input, or (for use and
// remove) a fingerprint.
func (c *KeyringCommand) parseKey(req *agent.KeyringRequest, arg string) error {
	if arg == "-" {
		in := c.stdin
		if in == nil {
			in = os.Stdin
		}
		line, err := bufio.NewReader(io.LimitReader(in, 1<<10)).ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("keyring: read the key from standard input: %w", err)
		}
		arg = strings.TrimSpace(line)
	}
	if strings.HasPrefix(arg, "sha256:") {
		if req.Op == agent.KeyringInstall {
			return usageErrorf("keyring", "-install needs the key itself, not a fingerprint")
		}
		req.Fingerprint = arg
		return nil
	}
	key, err := base64.StdEncoding.DecodeString(arg)
	if err != nil {
		// The argument may be a key with a typo: never repeat it.
		return usageErrorf("keyring", "-%s: the key must be base64, as printed by `%s keygen`", req.Op, progName)
	}
	if n := len(key); n != 16 && n != 24 && n != 32 {
		return usageErrorf("keyring", "-%s: a key is 16, 24 or 32 bytes (got %d)", req.Op, n)
	}
	req.Key = key
	return nil
}
