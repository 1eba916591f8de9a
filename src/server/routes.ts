import { Queue } from 'bullmq';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Knex } from 'knex';
import type { DdlExecutor } from '../ddl/executor.js';
import { ConflictError, NotFoundError, ValidationError } from '../errors.js';
import { parsePayload } from '../jobs/schemas.js';
import { MembershipRegistry } from '../membership/registry.js';
import { displayName, resolveName, qualifiedText } from '../mv/identifiers.js';
import { findMviewByName } from '../mv/repository.js';
import { listHistory } from '../mv/history.js';
import { parseLimit } from '../mv/paging.js';
import { listMviewStatus } from '../mv/status.js';
import { pageMviewStatus } from '../mv/statusPage.js';
import { jobStatus } from '../client/jobStatus.js';
import { bullQueueName, REQUESTS_QUEUE } from '../queue/names.js';
import { isCluster, type RedisClient } from '../queue/redis.js';
import { HashRing } from '../ring/hashRing.js';
import { findMlogByTable } from '../mlog/repository.js';
import { listMlogStatus } from '../mlog/status.js';
import { explainMv } from '../fast/explain.js';
import { systemClock } from '../clock.js';
import { forgetVersions } from '../versions/forget.js';

export interface RouteDeps {
  db: Knex;
  redis: RedisClient;
  prefix: string;
  defaultSchema: string;
  ddl: DdlExecutor;
  vnodes?: number;
}

/** What fastify sends JSON answers as. */
const JSON_TYPE = 'application/json; charset=utf-8';

/** Errors are JSON {error, message}: 400 bad input, 404 unknown, 409 conflict. */
export function sendError(reply: FastifyReply, err: unknown): FastifyReply {
  if (err instanceof ValidationError) return reply.code(400).send({ error: 'bad_request', message: err.message });
  if (err instanceof NotFoundError) return reply.code(404).send({ error: 'not_found', message: err.message });
  if (err instanceof ConflictError) return reply.code(409).send({ error: 'conflict', message: err.message });
  throw err;
}

function body(req: { body: unknown }): Record<string, unknown> {
  const b = req.body;
  if (b === undefined || b === null) return {};
  if (typeof b !== 'object' || Array.isArray(b)) throw new ValidationError('body: expected a JSON object');
  return b as Record<string, unknown>;
}

/** The /v1 API of DESIGN.md §3. */
export function registerRoutes(app: FastifyInstance, deps: RouteDeps): void {
  const requestsName = bullQueueName(REQUESTS_QUEUE, isCluster(deps.redis));
  const requests = new Queue(requestsName, { connection: deps.redis, prefix: deps.prefix });
  app.addHook('onClose', async () => {
    await requests.close();
  });
  const registry = new MembershipRegistry(deps.redis, deps.prefix);
  const ring = async () => {
    const r = new HashRing(deps.vnodes !== undefined ? { vnodes: deps.vnodes } : {});
    r.rebuild(await registry.live());
    return r;
  };
  const enqueue = async (name: string, payload: unknown) => {
    const job = await requests.add(name, payload, { removeOnComplete: { age: 3600 }, removeOnFail: { age: 86_400 } });
    return { jobId: job.id, queue: requestsName, name };
  };
  const mustFind = async (schema: string, name: string) => {
    const n = resolveName({ schema, name }, deps.defaultSchema, 'materialized view');
    const mv = await findMviewByName(deps.db, n.schema, n.name);
    if (!mv) throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
    return { n, mv };
  };

  app.post('/v1/sql', async (req, reply) => {
    try {
      const sql = body(req).sql;
      if (typeof sql !== 'string' || sql.trim() === '') throw new ValidationError('sql: expected a non-empty string');
      return await deps.ddl.execute(sql);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  type PageQuery = { Querystring: { limit?: string; cursor?: string } };
  const pageOpts = (q: { limit?: string; cursor?: string }) => ({ limit: parseLimit(q.limit), ...(q.cursor ? { cursor: q.cursor } : {}) });

  // Paged: {items, nextCursor} (it answered {mviews} before paging; see the README). Sent as
  // bytes: handed a string, fastify measures its UTF-8 length (a pass over the 600 KB of a
  // default page) before the socket encodes it again; Buffer.from is one pass for both.
  app.get<PageQuery>('/v1/mviews', async (req, reply) => {
    try {
      const page = await pageMviewStatus(deps.db, ring(), pageOpts(req.query));
      return reply.type(JSON_TYPE).send(Buffer.from(JSON.stringify(page)));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get<{ Params: { schema: string; name: string } }>('/v1/mviews/:schema/:name', async (req, reply) => {
    try {
      const { n, mv } = await mustFind(req.params.schema, req.params.name);
      const [status] = await listMviewStatus(deps.db, ring(), n);
      const history = await listHistory(deps.db, mv.mview_id, { limit: 20 });
      return { ...status, definition: mv.mview_definition, history: history.items };
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get<{ Params: { schema: string; name: string } } & PageQuery>('/v1/mviews/:schema/:name/history', async (req, reply) => {
    try {
      const { mv } = await mustFind(req.params.schema, req.params.name);
      return await listHistory(deps.db, mv.mview_id, pageOpts(req.query));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  // Jobs this API enqueued: all of them go to the requests queue.
  app.get<{ Params: { id: string } }>('/v1/jobs/:id', async (req, reply) => {
    try {
      const status = await jobStatus(requests, req.params.id);
      if (status.state === 'unknown') {
        throw new NotFoundError(`job ${req.params.id} is not in the ${REQUESTS_QUEUE} queue (finished jobs are kept for an hour, failed ones for a day)`);
      }
      return status;
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post<{ Params: { schema: string; name: string } }>('/v1/mviews/:schema/:name/refresh', async (req, reply) => {
    try {
      const { n } = await mustFind(req.params.schema, req.params.name);
      const b = body(req);
      // Methods are SQL keywords: any case will do, as in the CLI.
      const method = typeof b.method === 'string' ? b.method.toUpperCase() : b.method;
      const payload = parsePayload('refresh', {
        mview: qualifiedText(n),
        trigger: 'MANUAL',
        ...(method !== undefined ? { method } : {}),
        ...(b.cascade !== undefined ? { cascade: b.cascade } : {}),
      });
      return reply.code(202).send(await enqueue('refresh', payload));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get('/v1/mlogs', async () => ({ mlogs: await listMlogStatus(deps.db) }));

  app.post<{ Params: { schema: string; table: string } }>('/v1/mlogs/:schema/:table/purge', async (req, reply) => {
    try {
      const n = resolveName({ schema: req.params.schema, name: req.params.table }, deps.defaultSchema, 'table');
      if (!(await findMlogByTable(deps.db, n.schema, n.name))) {
        throw new NotFoundError(`there is no materialized view log on ${displayName(n)}`);
      }
      return reply.code(202).send(await enqueue('purge', parsePayload('purge', { mlog: qualifiedText(n) })));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post('/v1/explain-mv', async (req, reply) => {
    try {
      const select = body(req).select;
      if (typeof select !== 'string' || select.trim() === '') throw new ValidationError('select: expected a non-empty string');
      return await explainMv(deps.db, select, deps.defaultSchema);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post<{ Params: { schema: string; table: string } }>('/v1/base-tables/:schema/:table/versions', async (req, reply) => {
    try {
      const table = qualifiedText(resolveName({ schema: req.params.schema, name: req.params.table }, deps.defaultSchema, 'table'));
      const payload = parsePayload('report-versions', { ...body(req), table });
      return reply.code(202).send(await enqueue('report-versions', payload));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.delete<{ Params: { schema: string; table: string } }>('/v1/base-tables/:schema/:table/versions', async (req, reply) => {
    try {
      const n = resolveName({ schema: req.params.schema, name: req.params.table }, deps.defaultSchema, 'table');
      const out = await forgetVersions(deps.db, n, systemClock);
      return reply.code(200).send({ table: displayName(n), schema: n.schema, tableName: n.name, partitions: out.partitions, mviews: out.mviews.length });
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post('/v1/repairs', async (req, reply) => {
    try {
      return reply.code(202).send(await enqueue('repair', parsePayload('repair', body(req))));
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get('/v1/nodes', async () => ({ nodes: await registry.live() }));
}
