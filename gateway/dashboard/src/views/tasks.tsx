export function TasksView() { return <p>tasks</p>; }
export function TaskView() { return <p>task</p>; }
