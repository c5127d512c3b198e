package main

import (
	"log/slog"

	"github.com/recon-mri/recon/internal/config"
)

// keepWarnings wraps a config loader so that the warnings it returns are
// also kept in *into: a daemon writes them into its log file as well as on
// standard error (a misspelt key would otherwise be seen only by whoever
// watched the terminal at start).
func keepWarnings[T any](load func(string) (*T, []config.Warning, error), into *[]config.Warning) func(string) (*T, []config.Warning, error) {
	return func(path string) (*T, []config.Warning, error) {
		c, warns, err := load(path)
		*into = warns
		return c, warns, err
	}
}

// logConfigWarnings writes a daemon's config warnings into its log.
func logConfigWarnings(log *slog.Logger, warns []config.Warning) {
	for _, w := range warns {
		log.Warn("config warning", "file", w.File, "line", w.Line, "warning", w.Msg)
	}
}
