import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The compiled build for plain-JS consumers (`npm run build`, run by prepack): compile the
// package entry with tsconfig.build.json into a scratch package, then import it by the package
// name with plain node (no tsx) and type-check a consumer against its .d.ts. The scratch package
// lives under the repo (test-artifacts/, gitignored) so the build's bare imports (zod, bullmq)
// resolve from the repo's node_modules; the repo's own dist/ is not touched.

const run = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const tsc = join(root, 'node_modules/typescript/bin/tsc');
const pkgJson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  name: string;
  main: string;
  types: string;
  files: string[];
  scripts: Record<string, string>;
  exports: Record<string, Record<string, string>>;
};

let scratch: string;
let pkg: string;
let outDir: string;

beforeAll(async () => {
  mkdirSync(join(root, 'test-artifacts'), { recursive: true });
  scratch = mkdtempSync(join(root, 'test-artifacts', 'package-build-'));
  pkg = join(scratch, 'mvsched');
  outDir = join(pkg, 'dist');
  mkdirSync(pkg);
  // Self-reference by name resolves through this copy's "exports", i.e. into the scratch dist/.
  copyFileSync(join(root, 'package.json'), join(pkg, 'package.json'));
  await run(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', outDir], { cwd: root });
}, 60_000);

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('compiled package build (dist/)', () => {
  it('package.json points the import/default and types conditions at the build, which prepack makes', () => {
    expect(pkgJson.exports['.']).toEqual({ types: './dist/index.d.ts', import: './dist/index.js', default: './dist/index.js' });
    expect(pkgJson.main).toBe('./dist/index.js');
    expect(pkgJson.types).toBe('./dist/index.d.ts');
    expect(pkgJson.files).toEqual(expect.arrayContaining(['dist', 'bin', 'src']));
    expect(pkgJson.scripts['prepack']).toMatch(/\bbuild\b/);
    expect(pkgJson.scripts['build']).toContain('tsconfig.build.json');
    expect(readFileSync(join(root, '.gitignore'), 'utf8').split('\n')).toContain('dist/');
  });

  it('emits JS and .d.ts for the entry and what it imports', () => {
    for (const f of ['index.js', 'index.d.ts', 'client/mvsClient.js', 'client/mvsClient.d.ts', 'jobs/schemas.js', 'jobs/schemas.d.ts']) {
      expect(existsSync(join(outDir, f)), f).toBe(true);
    }
    expect(readFileSync(join(outDir, 'client/mvsClient.d.ts'), 'utf8')).toMatch(/export declare class MvsClient\b/);
  });

  it('plain node (no tsx) imports it by package name and the schemas validate', async () => {
    const consumer = join(pkg, 'consumer.mjs');
    writeFileSync(
      consumer,
      `
import assert from 'node:assert/strict';
import * as mvs from 'mvsched';
const { MvsClient, refreshPayload, reportVersionsPayload, parsePayload, ValidationError, REQUESTS_QUEUE } = mvs;
assert.equal(typeof MvsClient, 'function');
assert.match(Function.prototype.toString.call(MvsClient), /^class\\b/);
assert.equal(REQUESTS_QUEUE, 'requests');
assert.deepEqual(refreshPayload.parse({ mview: 'app.mv', method: 'FAST' }), { mview: 'app.mv', method: 'FAST' });
const bad = refreshPayload.safeParse({ mview: 'app.mv', method: 'SLOW' });
assert.equal(bad.success, false);
assert.deepEqual(bad.error.issues[0].path, ['method']);
assert.equal(reportVersionsPayload.safeParse({ table: 's.t', partitions: [{ partitionName: 'p0', partitionId: 1, version: 2, versionTime: 0 }], dataChanged: false }).success, true);
assert.throws(() => parsePayload('refresh', { mview: 'app.mv', method: 'SLOW' }), (e) => e instanceof ValidationError && /method/.test(e.message) && e.details.field === 'method');
console.log('ok', Object.keys(mvs).sort().join(','));
`,
    );
    const { stdout } = await run(process.execPath, [consumer], { cwd: pkg, env: { ...process.env, NODE_OPTIONS: '' } });
    expect(stdout).toMatch(/^ok .*\bMvsClient\b/);
  });

  it('a TypeScript consumer type-checks against the "types" condition', async () => {
    writeFileSync(
      join(pkg, 'consumer.ts'),
      `
import { MvsClient, type MvsClientOptions, type RefreshPayload } from 'mvsched';
const opts: MvsClientOptions = { connection: { host: 'localhost', port: 6379 } };
const payload: RefreshPayload = { mview: 'app.mv', method: 'COMPLETE' };
export async function go(): Promise<string> {
  const c = new MvsClient(opts);
  const job = await c.refresh(payload.mview, { method: payload.method });
  // @ts-expect-error 'SLOW' is not a refresh method
  await c.refresh('a.b', { method: 'SLOW' });
  await c.close();
  return job.jobId;
}
`,
    );
    const compilerOptions = { noEmit: true, strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', skipLibCheck: true, types: ['node'] };
    writeFileSync(join(pkg, 'tsconfig.json'), JSON.stringify({ compilerOptions, files: ['consumer.ts'] }));
    const res = await run(process.execPath, [tsc, '-p', pkg, '--traceResolution'], { cwd: pkg, maxBuffer: 64 << 20 }).catch(
      (e: { stdout: string; stderr: string }) => e,
    );
    const out = `${res.stdout}\n${res.stderr}`;
    expect(out).not.toMatch(/error TS/);
    expect(out).toMatch(/Module name 'mvsched' was successfully resolved to '[^']*\/dist\/index\.d\.ts'/);
  });
});
