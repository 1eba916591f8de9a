import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Knex } from 'knex';
import { MembershipRegistry } from '../../src/membership/registry.js';
import { createLogger } from '../../src/log.js';
import { JobPlacer, type QueueSnapshot } from '../../src/queue/jobPlacer.js';
import { nodeQueueName, taskRingKey } from '../../src/queue/names.js';
import { closeRedis, createRedisClient, redisTarget, type RedisClient } from '../../src/queue/redis.js';
import { HashRing } from '../../src/ring/hashRing.js';
import type { TestEnv } from './testEnv.js';

const bin = fileURLToPath(new URL('../../bin/mvsched.js', import.meta.url));

export interface Proc {
  name: string;
  child: ChildProcess;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/**
 * Real mvsched processes (planner, workers) for one test file, started from the CLI with the
 * file's environment; every process still running is killed by closeAll().
 */
export class Cluster {
  readonly procs = new Set<Proc>();

  constructor(private readonly t: TestEnv, private readonly extraEnv: Record<string, string> = {}) {}

  spawn(name: string, args: string[], env: Record<string, string> = {}): Proc {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...process.env, ...this.t.env, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'info', ...this.extraEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    // Keep the tail only: a long soak must not grow memory without bound.
    const keep = (d: Buffer) => {
      out = (out + d.toString()).slice(-200_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.on('exit', (code, signal) => resolve({ code, signal }));
    });
    const p: Proc = { name, child, exited, output: () => out };
    this.procs.add(p);
    void exited.then(() => this.procs.delete(p));
    return p;
  }

  worker(nodeId: string, env: Record<string, string> = {}): Proc {
    return this.spawn(`worker ${nodeId}`, ['worker', '--node-id', nodeId], env);
  }

  planner(env: Record<string, string> = {}): Proc {
    return this.spawn('planner', ['planner'], env);
  }

  async stop(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
    return p.exited;
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.procs].map((p) => this.stop(p, 'SIGKILL')));
  }
}

/** The JSON log lines a process printed (pino), skipping anything else. */
export function logLines(p: Proc): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of p.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a line cut by the output tail buffer
    }
  }
  return out;
}

export interface QueueInspector {
  /** A single Redis or a Redis Cluster, as the file's environment says. */
  redis: RedisClient;
  placer: JobPlacer;
  registry: MembershipRegistry;
  close(): Promise<void>;
}

export function inspector(t: TestEnv): QueueInspector {
  const redis = createRedisClient(redisTarget(t.config));
  const logger = createLogger({ level: 'silent' });
  const placer = new JobPlacer(redis, t.prefix, logger);
  const registry = new MembershipRegistry(redis, t.prefix);
  return {
    redis,
    placer,
    registry,
    async close() {
      await placer.close();
      await closeRedis(redis);
    },
  };
}

export interface JobLocation {
  queue: string;
  state: 'delayed' | 'ready' | 'active';
  dueAt?: number;
}

/** Every scheduled job of every node queue (registered or live), by MV id. */
export async function collectJobs(ins: QueueInspector): Promise<Map<number, JobLocation[]>> {
  const live = await ins.registry.live();
  const queues = [...new Set([...(await ins.registry.nodeQueues()), ...live.map(nodeQueueName)])];
  const out = new Map<number, JobLocation[]>();
  const add = (id: number, loc: JobLocation) => out.set(id, [...(out.get(id) ?? []), loc]);
  for (const q of queues) {
    const snap: QueueSnapshot = await ins.placer.snapshot(q);
    for (const [id, due] of snap.delayed) add(id, { queue: q, state: 'delayed', dueAt: due });
    for (const id of snap.ready) add(id, { queue: q, state: 'ready' });
    for (const id of snap.active) add(id, { queue: q, state: 'active' });
  }
  return out;
}

const DUE_SLACK_MS = 100;

/**
 * Invariant 1 (DESIGN.md §4): exactly one pending job per active scheduled MV (and per MV log
 * with a purge schedule) across all node queues, in its owner's queue on the ring of live nodes,
 * delayed to next_time; none for others. Tasks are keyed as in TaskId (MV logs negative).
 * Returns a list of violations (empty when it holds). Works on a single Redis and on a Redis
 * Cluster alike: the inspector's placer and registry take the queue names and keys (hash tags)
 * from the kind of connection it holds.
 */
export async function invariant1Violations(db: Knex, ins: QueueInspector, vnodes?: number): Promise<string[]> {
  const mvRows = (await db('mvs_mviews as m')
    .join('mvs_mview_refresh_info as ri', 'ri.mview_id', 'm.mview_id')
    .select('m.mview_id', 'm.status', 'ri.next_time')) as Array<{ mview_id: number; status: string; next_time: Date | null }>;
  const logRows = (await db('mvs_mlogs as l')
    .join('mvs_mlog_purge_info as pi', 'pi.mlog_id', 'l.mlog_id')
    .select('l.mlog_id', 'l.purge_method', 'pi.next_time')) as Array<{ mlog_id: number; purge_method: string; next_time: Date | null }>;
  const rows = [
    ...mvRows,
    ...logRows.map((l) => ({ mview_id: -Number(l.mlog_id), status: l.purge_method === 'SCHEDULED' ? 'ACTIVE' : l.purge_method, next_time: l.next_time })),
  ];
  const live = await ins.registry.live();
  const ring = new HashRing(vnodes !== undefined ? { vnodes } : {});
  ring.rebuild(live);
  const jobs = await collectJobs(ins);
  const problems: string[] = [];
  const seen = new Set<number>();
  for (const r of rows) {
    const id = Number(r.mview_id);
    seen.add(id);
    const locs = jobs.get(id) ?? [];
    const wanted = r.status === 'ACTIVE' && r.next_time !== null;
    if (!wanted) {
      if (locs.some((l) => l.state !== 'active')) problems.push(`mv ${id} (${r.status}, next ${String(r.next_time)}) has a pending job: ${JSON.stringify(locs)}`);
      continue;
    }
    const pending = locs.filter((l) => l.state !== 'active');
    const running = locs.filter((l) => l.state === 'active');
    if (pending.length + running.length !== 1) {
      problems.push(`mv ${id} has ${locs.length} jobs: ${JSON.stringify(locs)}`);
      continue;
    }
    const loc = locs[0]!;
    const owner = ring.getNode(taskRingKey(id));
    if (owner === undefined) continue;
    if (loc.queue !== nodeQueueName(owner)) problems.push(`mv ${id} job is in ${loc.queue}, owner is ${owner}`);
    // changeDelay() takes BullMQ's own clock reading, so a rescheduled job may sit a few ms off.
    if (loc.state === 'delayed' && Math.abs(loc.dueAt! - r.next_time!.getTime()) > DUE_SLACK_MS) {
      problems.push(`mv ${id} job due ${loc.dueAt}, next_time ${r.next_time!.getTime()}`);
    }
  }
  for (const [id, locs] of jobs) {
    if (!seen.has(id) && locs.some((l) => l.state !== 'active')) problems.push(`job for unknown mv ${id}: ${JSON.stringify(locs)}`);
  }
  return problems;
}

/**
 * The companion of invariant 1 for pipeline waves: a target-lag MV has no scheduled job (it has
 * no next_time; invariant1Violations checks that), and its wave steps (`wave-<wave>-<mv>`) come
 * one at a time: no MV has pending steps of two waves at once across the node queues.
 */
export async function waveStepViolations(ins: QueueInspector): Promise<string[]> {
  const live = await ins.registry.live();
  const queues = [...new Set([...(await ins.registry.nodeQueues()), ...live.map(nodeQueueName)])];
  const byMv = new Map<number, string[]>();
  for (const q of queues) {
    const jobs = await ins.placer.queue(q).getJobs(['delayed', 'waiting', 'prioritized']);
    for (const j of jobs) {
      const m = /^wave-(\d+)-(\d+)$/.exec(j?.id ?? '');
      if (m) byMv.set(Number(m[2]), [...(byMv.get(Number(m[2])) ?? []), `${q}/${j!.id}`]);
    }
  }
  return [...byMv].filter(([, l]) => l.length > 1).map(([id, l]) => `mv ${id} has pending steps of ${l.length} waves: ${l.join(', ')}`);
}
