// Package config reads and checks the natganker agent's configuration.
//
// The configuration is an HCL file (see examples/agent.hcl). Reading it goes in three
// steps: Default supplies every optional setting, the file is parsed on top of it (from
// bytes, so tests parse strings), and Validate checks the result. Unknown attributes and
// blocks are errors, reported with their file:line,col position and the enclosing block,
// and every validation error names the setting and the bad value:
//
//	agent.hcl:3,3-10: group "egress": unknown attribute "priorty" (did you mean "priority"?)
//	agent.hcl:14,20-25: group "egress".failback_delay: must be at least 1s (got 0s)
//
// Problems are reported all at once, in file order, at most 20 of them. Values are plain
// (strings, numbers, bools, lists and maps): HCL expressions are refused. A file larger
// than 32 KiB, or nested more than 32 levels deep, is refused before it is parsed, so that
// any input is answered in milliseconds.
//
// Parse reads nothing but the bytes it is given; Load also reads the gossip key file.
package config
