package oauthserver

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

func (s *storage) StoreDeviceAuthorization(_ context.Context, clientID, deviceCode, userCode string, expires time.Time, scopes []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.userCodes[userCode]; ok {
		return op.ErrDuplicateUserCode
	}
	s.devices[deviceCode] = &deviceEntry{userCode: userCode,
		state: op.DeviceAuthorizationState{ClientID: clientID, Scopes: scopes, Expires: expires}}
	s.userCodes[userCode] = deviceCode
	return nil
}

func (s *storage) GetDeviceAuthorizatonState(ctx context.Context, clientID, deviceCode string) (*op.DeviceAuthorizationState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.devices[deviceCode]
	if !ok || e.state.ClientID != clientID || e.used {
		return nil, errors.New("device code unknown or already used")
	}
	state := e.state
	state.Scopes, state.AMR = slices.Clone(state.Scopes), slices.Clone(state.AMR)
	if state.Done {
		s.deviceGrants[&state] = deviceCode
	}
	return &state, nil
}

// decideDevice records the user's answer for userCode at the verification
// page.
func (s *storage) decideDevice(userCode, username, password string, allow bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !checkUser(username, password) {
		return errors.New("wrong username or password")
	}
	e, ok := s.devices[s.userCodes[userCode]]
	if !ok || e.used || time.Now().After(e.state.Expires) {
		return errors.New("user code unknown, expired or used")
	}
	if !allow {
		e.state.Denied = true
		return nil
	}
	e.state.Subject, e.state.AuthTime, e.state.AMR, e.state.Done = UserID, time.Now(), []string{"pwd"}, true
	return nil
}
