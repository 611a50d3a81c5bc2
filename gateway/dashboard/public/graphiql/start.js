// The token: from the URL fragment (/graphiql#token=..., never sent to the server), else the
// one the dashboard signed in with in this tab. It goes into the HTTP Authorization header
// and into the WebSocket connection_init payload, where the gateway looks for it.
(function () {
  var fromHash = new URLSearchParams(window.location.hash.slice(1)).get('token');
  var fromDashboard = null;
  try { fromDashboard = window.sessionStorage.getItem('troupe.token'); } catch (e) { /* storage refused */ }
  var token = fromHash || fromDashboard || '';
  var auth = token ? { Authorization: 'Bearer ' + token } : {};
  var wsUrl = new URL('/graphql/ws', window.location.origin);
  wsUrl.protocol = wsUrl.protocol === 'https:' ? 'wss:' : 'ws:';
  var fetcher = GraphiQL.createFetcher({
    url: new URL('/graphql', window.location.origin).toString(),
    subscriptionUrl: wsUrl.toString(),
    headers: auth,
    wsConnectionParams: auth,
  });
  var hint = token ? undefined :
    '# No token: sign in on the dashboard (/) first, or open this page as\n' +
    '# /graphiql#token=<token> (the admin token is in <data-dir>/admin.token).\n';
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultQuery: hint, defaultEditorToolsVisibility: true }),
  );
})();
