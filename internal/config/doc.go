// Package config reads recon's ITEM = VALUE configuration files (recon.opts
// and relay.opts, as the Python prototype wrote them) into typed, validated
// configs, and writes fresh default files.
//
// One schema table per kind of file (schema.go) is the single source of every
// key's type, default, documentation and users: the loaders, the default
// files and ReferenceMarkdown are all built from it.
//
// Each program loads only the keys it uses: LoadServer, LoadClient (also for
// recon watch) and LoadAdmin read recon.opts; LoadRelay and LoadRelayAdmin
// read relay.opts. Errors name file:line and never contain a key.
package config
