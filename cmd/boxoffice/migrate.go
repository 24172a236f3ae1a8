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
	urlFile := fs.String("database-url-file", os.Getenv("BOXOFFICE_DATABASE_URL_FILE"), "file holding the PostgreSQL URL, instead of --database-url [BOXOFFICE_DATABASE_URL_FILE]")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	u, err := secretFromFile("database-url", *url, *urlFile)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if u == "" {
		return errors.New("migrate: --database-url, --database-url-file or BOXOFFICE_DATABASE_URL(_FILE) is required")
	}
	if err := persistence.Migrate(ctx, u); err != nil {
		return err
	}
	fmt.Println("migrations applied")
	return nil
}
