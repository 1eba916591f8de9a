import { redisKeys } from '../queue/names.js';
import { isCluster, type RedisClient } from '../queue/redis.js';

// The record of pipeline waves in Redis (derived state, like the queues: a wave lost with Redis
// is planned again from MySQL). Every command touches one key, so it works on a Redis Cluster
// whatever slots the keys hash to (there they carry mvsched's own tag, `{mvs}`, queue/names.ts):
// - `wave:<id>`: a hash per wave; field `s:<mview id>` holds each finished step's result,
//   `cancel` the reason a wave was called off; it expires on its own an hour after it opened;
// - `waves`: a hash of open waves (id -> plan), so a planner that takes over the lead supervises
//   the waves its predecessor started;
// - `wave-seq`: the counter wave ids come from.

export type StepResult =
  | { r: 'done'; start: number; end: number; how: 'ran' | 'fresh' }
  | { r: 'failed'; reason: string }
  | { r: 'cancelled'; reason: string };

export interface WaveRecord {
  id: string;
  /** Planner clock, epoch ms. */
  startMs: number;
  /** Called off when no step finished for this long. */
  stallMs: number;
  /** Targets due in this wave. */
  targets: number[];
  steps: Array<{ id: number; preds: number[]; queue: string; target: boolean }>;
}

export interface WaveState {
  /** The wave's hash exists (gone: it expired or was closed). */
  open: boolean;
  cancelled: string | null;
  steps: Map<number, StepResult>;
}

/** A wave's hash expires this long after it opened (the planner closes it long before). */
const WAVE_TTL_S = 3_600;

// Writes a field only while the wave's hash exists: a step that runs after its wave was closed
// must not bring the hash back (it would never expire).
const HSET_IF_OPEN = `if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) else return -1 end`;

const stepField = (mviewId: number) => `s:${mviewId}`;

export class WaveLedger {
  private readonly keys: ReturnType<typeof redisKeys>;

  constructor(
    private readonly redis: RedisClient,
    prefix: string,
  ) {
    this.keys = redisKeys(prefix, isCluster(redis));
  }

  async nextId(): Promise<string> {
    return String(await this.redis.incr(this.keys.waveSeq));
  }

  /** Open a wave: its hash (with its expiry) first, then its entry in the index. */
  async open(w: WaveRecord): Promise<void> {
    const key = this.keys.wave(w.id);
    await this.redis.multi().hset(key, 'start', String(w.startMs)).expire(key, WAVE_TTL_S).exec();
    await this.redis.hset(this.keys.waves, w.id, JSON.stringify(w));
  }

  /** A step's result; false when the wave is closed already. */
  async record(waveId: string, mviewId: number, result: StepResult): Promise<boolean> {
    const r = (await this.redis.eval(HSET_IF_OPEN, 1, this.keys.wave(waveId), stepField(mviewId), JSON.stringify(result))) as number;
    return r !== -1;
  }

  async cancel(waveId: string, reason: string): Promise<void> {
    await this.redis.eval(HSET_IF_OPEN, 1, this.keys.wave(waveId), 'cancel', reason);
  }

  /** The results of some steps of a wave (all of them without `ids`). */
  async read(waveId: string, ids?: number[]): Promise<WaveState> {
    const key = this.keys.wave(waveId);
    const steps = new Map<number, StepResult>();
    if (ids) {
      const fields = ['start', 'cancel', ...ids.map(stepField)];
      const vals = await this.redis.hmget(key, ...fields);
      ids.forEach((id, i) => {
        const v = vals[i + 2];
        if (v) steps.set(id, JSON.parse(v) as StepResult);
      });
      return { open: vals[0] !== null, cancelled: vals[1] ?? null, steps };
    }
    const all = await this.redis.hgetall(key);
    for (const [f, v] of Object.entries(all)) if (f.startsWith('s:')) steps.set(Number(f.slice(2)), JSON.parse(v) as StepResult);
    return { open: 'start' in all, cancelled: all.cancel ?? null, steps };
  }

  /** Forget a finished wave. */
  async close(waveId: string): Promise<void> {
    await this.redis.del(this.keys.wave(waveId));
    await this.redis.hdel(this.keys.waves, waveId);
  }

  /** Waves opened and not closed yet (by this planner or one before it). */
  async openWaves(): Promise<WaveRecord[]> {
    const all = await this.redis.hgetall(this.keys.waves);
    return Object.values(all).map((v) => JSON.parse(v) as WaveRecord);
  }
}
