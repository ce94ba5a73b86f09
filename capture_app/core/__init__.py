"""Pure math and names at the bottom of everything: transforms, interpolation, the action space, the hand
model, the host clock, clock mapping, stream names and the error hierarchy. No I/O, no threads; imports
nothing else of the project."""
