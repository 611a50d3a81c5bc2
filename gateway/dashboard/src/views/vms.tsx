export function VmsView() { return <p>vms</p>; }
export function VmView() { return <p>vm</p>; }
