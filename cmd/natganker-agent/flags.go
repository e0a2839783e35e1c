package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/natganker/natganker/agent/control"
)

// socketEnv names the environment variable that overrides the default control socket.
const socketEnv = "NATGANKER_SOCKET"

// defaultSocketText describes the socket default in help texts.
const defaultSocketText = control.DefaultSocket

// defaultSocket is the control socket used when -socket is not given.
func defaultSocket() string {
	if s := os.Getenv(socketEnv); s != "" {
		return s
	}
	return control.DefaultSocket
}

// errHelp means the user asked for a command's help; the command prints it and succeeds.
var errHelp = errors.New("help requested")

// parseFlags parses args into fs, named after its command. It returns errHelp for -help,
// -h, --help or a lone "help" argument, and a *UsageError for anything else wrong, including
// positional arguments, which no command takes.
func parseFlags(fs *flag.FlagSet, args []string) error {
	name := fs.Name()
	fs.SetOutput(io.Discard) // errors are reported once, by main, with a hint
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return &UsageError{Command: name, Err: err}
	}
	switch {
	case fs.NArg() == 0:
		return nil
	case fs.NArg() == 1 && fs.Arg(0) == "help":
		return errHelp
	default:
		return usageErrorf(name, "unexpected argument %q", fs.Arg(0))
	}
}

// printHelp writes a command's usage for errHelp and returns nil; other errors pass through.
func printHelp(w io.Writer, usage string, err error) error {
	if errors.Is(err, errHelp) {
		_, werr := io.WriteString(w, usage)
		return werr
	}
	return err
}

// groupList is a flag that may be repeated and holds comma-separated group names.
type groupList []string

// String returns the groups as given.
func (g *groupList) String() string { return strings.Join(*g, ",") }

// Set adds the comma-separated groups in s.
func (g *groupList) Set(s string) error {
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			return fmt.Errorf("empty group name in %q", s)
		}
		*g = append(*g, name)
	}
	return nil
}

// socketFlagHelp documents -socket in every client command's usage.
const socketFlagHelp = `  -socket PATH   control socket of the agent (default $` + socketEnv + `, or ` + defaultSocketText + `)`

// clientExitHelp documents exit codes of commands that talk to the agent.
const clientExitHelp = `Exit status: 0 success, 1 failure (including an agent that cannot be reached),
2 usage error.`
