// The daemon: sources → reconciler → kernel (being written).
