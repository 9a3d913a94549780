# placeholder, replaced by the Kalman kernels
def _placeholder():
    return 0
