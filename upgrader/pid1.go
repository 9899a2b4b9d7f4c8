package upgrader

import "os"

// canUpgrade returns nil where this generation can upgrade, else why not.
func (u *Upgrader) canUpgrade() error {
	if err := u.core.CanUpgrade(); err != nil {
		return err
	}
	if os.Getpid() == 1 {
		return ErrPID1
	}
	return nil
}
