import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildProgram } from '../../src/cli/main.js';
import { loadConfig } from '../../src/config.js';
import { listenHost } from '../../src/server/server.js';

interface Service {
  image?: string;
  build?: unknown;
  command?: string[];
  healthcheck?: { test: string[]; interval?: string };
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
}

const composeText = readFileSync(new URL('../../docker-compose.yml', import.meta.url), 'utf8');
const compose = parse(composeText, { merge: true }) as {
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

describe('docker-compose.yml: safe defaults', () => {
  const server = compose.services.server!;

  it('requires the operator to set MVS_API_TOKEN: no placeholder, no default', () => {
    expect(server.environment?.MVS_API_TOKEN).toMatch(/^\$\{MVS_API_TOKEN:\?[^}]+\}$/);
    // Nowhere a fallback value (`${MVS_API_TOKEN:-...}` / `${MVS_API_TOKEN-...}`) or a literal token.
    expect(composeText).not.toMatch(/MVS_API_TOKEN:?-/);
    for (const [name, svc] of Object.entries(compose.services)) {
      const token = svc.environment?.MVS_API_TOKEN;
      if (token !== undefined) expect(token, name).toMatch(/^\$\{MVS_API_TOKEN:\?/);
    }
  });

  it('publishes the server beyond loopback only with the token, which the server then accepts', () => {
    expect(server.environment?.MVS_HTTP_HOST).toBe('0.0.0.0');
    const env = { ...server.environment, MVS_API_TOKEN: 'a-token-the-operator-set-0123' };
    const config = loadConfig(env, { database: true, redis: true });
    expect(listenHost(config)).toBe('0.0.0.0');
    // The same service without a token would refuse to start (see test/unit/server.test.ts).
    const { MVS_API_TOKEN: _, ...noToken } = env;
    expect(() => listenHost(loadConfig(noToken, { database: true, redis: true }))).toThrow(/MVS_HTTP_HOST=0\.0\.0\.0 needs MVS_API_TOKEN/);
  });

  it('has a server health check on /healthz that works in the image (node, no curl)', () => {
    const test = server.healthcheck?.test ?? [];
    expect(test[0]).toBe('CMD');
    expect(test[1]).toBe('node');
    expect(test.join(' ')).toContain(`http://127.0.0.1:${server.environment?.MVS_HTTP_PORT}/healthz`);
    expect(server.healthcheck?.interval).toBeDefined();
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
