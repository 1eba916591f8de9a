import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  healthcheck?: { test: string[] };
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
}

const compose = parse(readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
};
const cliCommands = buildProgram({ out: () => {}, err: () => {}, env: {} }, () => {}).commands.map((c) => c.name());

describe('docker-compose.yml', () => {
  it('runs MySQL 8.4 and Redis 7 with health checks', () => {
    expect(compose.services.mysql?.image).toBe('mysql:8.4');
    expect(compose.services.redis?.image).toMatch(/^redis:7/);
    expect(compose.services.mysql?.healthcheck?.test.join(' ')).toContain('ping');
    expect(compose.services.redis?.healthcheck?.test.join(' ')).toContain('ping');
  });

  it('has a one-shot migrate service and planner, worker and server services', () => {
    for (const name of ['migrate', 'planner', 'worker', 'server']) expect(compose.services[name], name).toBeDefined();
    expect(compose.services.migrate?.command).toEqual(['migrate']);
    expect(compose.services.planner?.depends_on?.migrate?.condition).toBe('service_completed_successfully');
    expect(compose.services.server?.ports).toContain('8080:8080');
  });

  it('has a capture service and a MySQL whose binary log capture can read', () => {
    expect(compose.services.capture?.command).toEqual(['capture']);
    const args = compose.services.mysql?.command ?? [];
    for (const a of ['--binlog-format=ROW', '--binlog-row-image=FULL', '--binlog-row-metadata=FULL', '--gtid-mode=ON']) expect(args).toContain(a);
  });

  it('runs only commands that exist in the CLI', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (!svc.build) continue;
      const command = svc.command?.[0];
      expect(command, `${name} has a command`).toBeDefined();
      expect(cliCommands, `${name}: mvsched ${command}`).toContain(command);
    }
  });

  it('lets workers scale: no fixed node id, container name or host port on the worker', () => {
    const w = compose.services.worker as Service & { container_name?: string };
    expect(w.container_name).toBeUndefined();
    expect(w.ports).toBeUndefined();
    expect(w.environment?.MVS_NODE_ID).toBeUndefined();
    expect(w.environment?.DATABASE_URL).toMatch(/^mysql:\/\/.+@mysql:3306\//);
  });

  it('points every app service at the compose MySQL and Redis', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (!svc.build) continue;
      expect(svc.environment?.DATABASE_URL, name).toMatch(/@mysql:3306\//);
      expect(svc.environment?.REDIS_URL, name).toBe('redis://redis:6379');
    }
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
  it('is multi-stage and runs as a non-root user', () => {
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER (?!root)\w+/m);
    expect(dockerfile).toMatch(/npm ci --omit=dev/);
  });
});
