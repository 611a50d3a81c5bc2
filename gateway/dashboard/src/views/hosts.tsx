export function HostsView() { return <p>hosts</p>; }
