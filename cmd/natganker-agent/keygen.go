package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
)

// KeygenCommand prints a new gossip key.
type KeygenCommand struct {
	stdout io.Writer
}

// Synopsis returns a one-line description.
func (c *KeygenCommand) Synopsis() string { return "print a new random gossip key" }

// Usage returns the help text.
func (c *KeygenCommand) Usage() string {
	return `Usage: ` + progName + ` keygen

Prints a new gossip key: 32 random bytes (AES-256) in base64, the form
gossip.encrypt_key and the lines of gossip.encrypt_key_file take. For a new cluster:

  umask 077; ` + progName + ` keygen > /etc/natganker/gossip.key

and copy the file to every node. To change the key of a running cluster, see
"` + progName + ` help keyring".

Exit status: 0 success, 1 failure, 2 usage error.
`
}

// flags returns the command's flags: none.
func (c *KeygenCommand) flags() *flag.FlagSet { return flag.NewFlagSet("keygen", flag.ContinueOnError) }

// Run executes the command.
func (c *KeygenCommand) Run(_ context.Context, args []string) error {
	if err := parseFlags(c.flags(), args); err != nil {
		return printHelp(c.stdout, c.Usage(), err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	_, err := fmt.Fprintln(c.stdout, base64.StdEncoding.EncodeToString(key))
	return err
}
