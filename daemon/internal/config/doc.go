// Package config is what `handoff run` is asked to do: its flags, their
// defaults and checks (each bad value an ErrUsage error of one line that
// says what to give), --ready and --health, sizes and signal names. It
// reads the command line, the environment (the control socket's default
// place), the file system (the program in PATH, the user) and, for a probe's
// host name, the resolver; the env file is read at each generation's start.
package config
