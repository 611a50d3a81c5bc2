export function AgentsView() { return <p>agents</p>; }
export function AgentView() { return <p>agent</p>; }
