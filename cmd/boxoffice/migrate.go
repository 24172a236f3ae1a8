package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/boxoffice/boxoffice/persistence"
)

func runMigrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	url := fs.String("database-url", os.Getenv("BOXOFFICE_DATABASE_URL"), "PostgreSQL URL [BOXOFFICE_DATABASE_URL]")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *url == "" {
		return errors.New("migrate: --database-url or BOXOFFICE_DATABASE_URL is required")
	}
	if err := persistence.Migrate(ctx, *url); err != nil {
		return err
	}
	fmt.Println("migrations applied")
	return nil
}
