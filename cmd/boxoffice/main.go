// Command boxoffice is the seat-reservation engine's one binary:
//
//	boxoffice serve    run a node
//	boxoffice migrate  apply database migrations and exit
//	boxoffice demo     start a private PostgreSQL and a node, run a scripted scenario, keep serving
//	boxoffice bench    load-test a target (the engine or a baseline design) and verify the result
//	boxoffice status   print the cluster as a node sees it: members, ring, shows loaded and owned
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = runServe(ctx, args)
	case "migrate":
		err = runMigrate(ctx, args)
	case "demo":
		err = runDemo(ctx, args)
	case "bench":
		err = runBench(ctx, args)
	case "status":
		err = runStatus(ctx, args)
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "boxoffice: unknown command %q\n", cmd)
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "boxoffice:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: boxoffice <command> [flags]

commands:
  serve    run a node (see 'boxoffice serve -h')
  migrate  apply database migrations and exit
  demo     start a private PostgreSQL and a node, run a short scenario, keep serving
  bench    load-test a target and verify it ('bench compare' runs several in turn; 'bench -h')
  status   print the cluster as a node sees it: members, ring, shows loaded and owned ('status -h')
`)
}
