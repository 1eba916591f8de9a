#!/usr/bin/env node
// The CLI runs the TypeScript sources through tsx, so there is no build step between a change
// and `npx mvsched`.
import { register } from 'tsx/esm/api';

register();
const { runCli } = await import('../src/cli/main.ts');
process.exitCode = await runCli(process.argv);
