//go:build linux

package harness

import (
	"os"
	"syscall"
)

// sysProcAttr puts the server in its own process group (so a kill reaches
// the plugin processes it started) and has the kernel send it SIGTERM if the
// test binary dies without stopping it (a test timeout panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup sends SIGKILL to the process group p leads.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		_ = p.Kill()
	}
}
