import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Knex } from 'knex';
import { NotFoundError, ValidationError, errorMessage } from '../errors.js';
import { captureSummary } from '../capture/status.js';
import { explainMv } from '../fast/explain.js';
import { MembershipRegistry } from '../membership/registry.js';
import { displayName, resolveName } from '../mv/identifiers.js';
import { findMviewByName } from '../mv/repository.js';
import { isCluster, type RedisClient } from '../queue/redis.js';
import { HashRing } from '../ring/hashRing.js';
import { sendError } from '../server/routes.js';
import { loadStatic, type StaticFile } from './assets.js';
import { CsrfGuard } from './csrf.js';
import { pipelineGraph } from './graph.js';
import { listUiMlogs } from './mlogs.js';
import { overview, parseOverviewQuery } from './overview.js';

// The dashboard (DESIGN.md §3 "Dashboard") at /ui: two pages (the overview, one MV) served as a
// shell whose client reads the JSON API (/v1, with the login cookie) and the few listings only
// the dashboard needs (/ui/api: the filtered overview, logs with backlog, the pipeline graph,
// explain of an MV). Its one action, refresh, goes through the API's own route after a CSRF
// check, so it means exactly what POST /v1/mviews/:schema/:name/refresh means.

export const UI_PATH = '/ui';

export interface UiDeps {
  db: Knex;
  redis: RedisClient;
  prefix: string;
  defaultSchema: string;
  apiToken: string | undefined;
  vnodes?: number;
  /** Where Bull Board is served, for links to an MV's jobs. */
  boardPath: string;
}

// Scripts only from this server; styles may be set inline (the chart library sizes its canvas so).
const PAGE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

type MvParams = { Params: { schema: string; name: string } };

function sendStatic(req: FastifyRequest, reply: FastifyReply, f: StaticFile | undefined, cache: string): FastifyReply {
  if (!f) return reply.code(404).send({ error: 'not_found', message: 'no such file' });
  reply.header('etag', f.etag).header('cache-control', cache).header('x-content-type-options', 'nosniff');
  if (req.headers['if-none-match'] === f.etag) return reply.code(304).send();
  return reply.header('content-type', f.type).send(f.body);
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export async function registerUi(app: FastifyInstance, deps: UiDeps): Promise<void> {
  const { template, assets, vendor } = loadStatic();
  const csrf = new CsrfGuard(deps.apiToken);
  // Bull Board names a cluster's queues with their hash tags; the MV page links to them.
  const cluster = isCluster(deps.redis);
  const registry = new MembershipRegistry(deps.redis, deps.prefix);
  const liveRing = async () => {
    const nodes = await registry.live();
    const ring = new HashRing(deps.vnodes !== undefined ? { vnodes: deps.vnodes } : {});
    ring.rebuild(nodes);
    return { ring, nodes };
  };
  const mustFind = async (schema: string, name: string) => {
    const n = resolveName({ schema, name }, deps.defaultSchema, 'materialized view');
    const mv = await findMviewByName(deps.db, n.schema, n.name);
    if (!mv) throw new NotFoundError(`materialized view ${displayName(n)} does not exist`);
    return { n, mv };
  };
  // Parts of the /v1 API that came later than others: the client asks only for what is there.
  const apiFeatures = () =>
    [
      ['history', '/v1/mviews/:schema/:name/history'],
      ['jobs', '/v1/jobs/:id'],
    ]
      .filter(([, url]) => app.hasRoute({ method: 'GET', url: url! }))
      .map(([name]) => name!);
  const page = (view: 'overview' | 'mview', title: string) => (_req: FastifyRequest, reply: FastifyReply) =>
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('content-security-policy', PAGE_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-store')
      .send(
        template
          .replaceAll('%TITLE%', escapeHtml(title))
          .replaceAll('%VIEW%', view)
          .replaceAll('%CSRF%', csrf.token())
          .replaceAll('%BOARD%', escapeHtml(deps.boardPath))
          .replaceAll('%CLUSTER%', cluster ? '1' : '0')
          .replaceAll('%API%', apiFeatures().join(' ')),
      );

  app.get('/', (_req, reply) =>
    reply
      .header('content-type', 'text/html; charset=utf-8')
      .header('content-security-policy', PAGE_CSP)
      .send(
        '<!doctype html><meta charset="utf-8"><title>mvsched</title><h1>mvsched</h1><ul>' +
          `<li><a href="${UI_PATH}">Dashboard</a>: materialized views, lag, history, pipelines</li>` +
          `<li><a href="${escapeHtml(deps.boardPath)}">Bull Board</a>: the queues and their jobs</li>` +
          '<li><a href="/v1/mviews">/v1/mviews</a>: the JSON API</li><li><a href="/metrics">/metrics</a>: Prometheus</li></ul>',
      ),
  );
  // Nothing to show, but an answer, so a browser's own request for it is no error.
  app.get('/favicon.ico', (_req, reply) => reply.code(204).header('cache-control', 'public, max-age=86400').send());
  app.get(UI_PATH, page('overview', 'mvsched: materialized views'));
  app.get<MvParams>(`${UI_PATH}/mv/:schema/:name`, (req, reply) => page('mview', `mvsched: ${req.params.schema}.${req.params.name}`)(req, reply));
  app.get<{ Params: { file: string } }>(`${UI_PATH}/assets/:file`, (req, reply) => sendStatic(req, reply, assets.get(req.params.file), 'no-cache'));
  app.get<{ Params: { file: string } }>(`${UI_PATH}/vendor/:file`, (req, reply) => sendStatic(req, reply, vendor.get(req.params.file), 'public, max-age=3600'));

  app.get(`${UI_PATH}/api/overview`, async (req, reply) => {
    try {
      const query = parseOverviewQuery(req.query);
      const { ring, nodes } = await liveRing();
      return await overview(deps.db, ring, nodes, query);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get<{ Querystring: { offset?: string; limit?: string } }>(`${UI_PATH}/api/mlogs`, async (req, reply) => {
    try {
      const offset = req.query.offset === undefined ? 0 : Number(req.query.offset);
      const limit = req.query.limit === undefined ? 50 : Number(req.query.limit);
      if (!Number.isInteger(offset) || offset < 0) throw new ValidationError(`offset: expected a whole number >= 0, got ${JSON.stringify(req.query.offset)}`);
      if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new ValidationError(`limit: expected a whole number from 1 to 500, got ${JSON.stringify(req.query.limit)}`);
      const [page, capture] = await Promise.all([listUiMlogs(deps.db, { offset, limit }), captureSummary(deps.db, deps.redis, deps.prefix)]);
      return { ...page, capture };
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get<MvParams>(`${UI_PATH}/api/mviews/:schema/:name/graph`, async (req, reply) => {
    try {
      const { mv } = await mustFind(req.params.schema, req.params.name);
      return await pipelineGraph(deps.db, mv.mview_id);
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.get<MvParams>(`${UI_PATH}/api/mviews/:schema/:name/explain`, async (req, reply) => {
    try {
      const { mv } = await mustFind(req.params.schema, req.params.name);
      const stored = { method: mv.refresh_method, fastRefreshable: Boolean(mv.fast_refreshable), fastReason: mv.fast_reason };
      try {
        return { ...stored, explain: await explainMv(deps.db, mv.mview_definition, deps.defaultSchema) };
      } catch (err) {
        // The definition no longer plans (a base table changed or went): say so, keep the rest.
        return { ...stored, explain: null, explainError: errorMessage(err) };
      }
    } catch (err) {
      return sendError(reply, err);
    }
  });

  app.post<MvParams>(`${UI_PATH}/api/mviews/:schema/:name/refresh`, async (req, reply) => {
    const refused = csrf.refusal(req);
    if (refused) return reply.code(403).send({ error: 'forbidden', message: refused });
    const res = await app.inject({
      method: 'POST',
      url: `/v1/mviews/${encodeURIComponent(req.params.schema)}/${encodeURIComponent(req.params.name)}/refresh`,
      headers: { 'content-type': 'application/json', ...(deps.apiToken ? { authorization: `Bearer ${deps.apiToken}` } : {}) },
      payload: JSON.stringify(req.body ?? {}),
    });
    return reply.code(res.statusCode).header('content-type', 'application/json; charset=utf-8').send(res.body);
  });
}
