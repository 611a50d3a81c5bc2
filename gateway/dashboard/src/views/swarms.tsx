export function SwarmsView() { return <p>swarms</p>; }
export function SwarmView() { return <p>swarm</p>; }
