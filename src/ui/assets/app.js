import { renderMview } from './mview.js';
import { renderOverview } from './overview.js';

// Entry of the dashboard's pages: the server says which view the page is (body data-view).

const main = document.getElementById('main');
if (document.body.dataset.view === 'mview') renderMview(main);
else renderOverview(main);
