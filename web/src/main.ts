document.getElementById('app')!.textContent = 'genprm';
