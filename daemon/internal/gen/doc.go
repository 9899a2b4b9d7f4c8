// Package gen is the vocabulary of `handoff run`'s machine (package
// machine) and of the packages around it: a process of the program as the
// machine sees it (Gen, its State, the Spec it runs, the Strays it left),
// what the machine hears (the events, Ev*: the Event interface) and what it
// asks the supervisor to do (the actions, Act*: the Action interface). It
// holds no decision and does no I/O, so that the packages that start,
// probe, relay or count processes depend on these types without depending
// on the machine's logic. Every event and action is declared in one file
// of each (events.go, actions.go).
package gen
