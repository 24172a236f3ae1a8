package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseBench(t *testing.T) {
	c, err := parseBench(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice"}) || c.Scenario != "flash-sale" || c.ClientGOGC != 400 || c.Conns != 4 {
		t.Errorf("defaults: %+v", c)
	}
	c, err = parseBench(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Targets, []string{"boxoffice", "pg-status", "redis-setnx"}) || c.Rounds != 3 {
		t.Errorf("compare defaults: targets %v, rounds %d", c.Targets, c.Rounds)
	}

	for _, tc := range []struct {
		args    []string
		compare bool
		want    string
	}{
		{[]string{"--target", "mysql"}, false, "unknown target"},
		{[]string{"--target", "boxoffice,pg-status"}, false, "one --target"},
		{[]string{"--rounds", "0"}, true, "--rounds 0"},
		{[]string{"--client-gogc", "0"}, false, "--client-gogc 0"},
		{[]string{"--addr", "127.0.0.1:7070", "--database-url", ""}, false, "needs --database-url"},
		{[]string{"--max-seats", "11"}, false, "11"},
		{[]string{"extra"}, false, "unexpected arguments"},
	} {
		if _, err := parseBench(tc.args, tc.compare); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseBench(%q, compare %v) = %v, want an error with %q", tc.args, tc.compare, err, tc.want)
		}
	}
}
