// The package's "./widget" entry (dist/widget.js): <genprm-verifier> alone, defined when this
// module is imported. The element itself is present/widget.ts.
export * from './present/widget.ts';
