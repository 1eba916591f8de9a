#!/usr/bin/env node
// The CLI runs the TypeScript sources through tsx, so there is no build step between a change
// and `npx mvsched`.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli/main.ts');
process.exitCode = await runCli(process.argv);
// Everything was closed on the way out; a client still retrying a server that went away must
// not keep the process alive.
setTimeout(() => process.exit(), 3_000).unref();
