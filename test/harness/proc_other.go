//go:build !linux

package harness

import (
	"errors"
	"os"
	"syscall"
)

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(p *os.Process) { _ = p.Kill() }

func childProcesses(int, string) ([]int, error) {
	return nil, errors.New("finding plugin processes needs /proc (Linux)")
}
