package main

import (
	"context"
	"errors"
	"os/exec"
)

var execLookPath = exec.LookPath

type demoCmd struct{}

func (c *demoCmd) Run(ctx context.Context, args []string) error { return errors.New("todo") }

type benchCmd struct{}

func (c *benchCmd) Run(ctx context.Context, args []string) error { return errors.New("todo") }
